"""transformers' SmolLM2 (from the GGUF) with eager attention vs exaq_cpu's.

    python bench/bench_transformers.py [--new-tokens 32] [--prompt-tokens 256] [--rounds 3]

Loads the model once, registers ``exaq`` (bits=2, gauss) and ``exaq_exact``
(bits=None) attention, and times prefill + greedy decode of each in
interleaved rounds on one torch thread; prints medians in tokens/s and the
softmax kernels' own time is not separated (it is a small part of a step).
"""
import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    import transformers

    import exaq_cpu
    import exaq_cpu.integrations.transformers as exaq_hf
    from exaq_cpu.__main__ import cpu_model
    from exaq_cpu.llama import default_eval_text, load_gguf
    from exaq_cpu.llama.gguf_loader import default_model_path
    from exaq_cpu.llama.tokenizer import GGUFTokenizer

    torch.set_num_threads(1)
    path = default_model_path()
    tokenizer = GGUFTokenizer(load_gguf(path).tokenizer)
    prompt = torch.tensor([tokenizer.encode(default_eval_text())[:args.prompt_tokens]])
    exaq_hf.register("exaq", bits=2)
    exaq_hf.register("exaq_exact", bits=None)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32, attn_implementation="eager")
    results = {name: {"prefill": [], "decode": []} for name in ("eager", "sdpa", "exaq", "exaq_exact")}
    for _ in range(args.rounds):
        for name in results:
            model.set_attn_implementation(name)
            with torch.no_grad():
                t0 = time.perf_counter()
                out = model(prompt, use_cache=True)
                t1 = time.perf_counter()
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                for _ in range(args.new_tokens):
                    out = model(token, past_key_values=cache, use_cache=True)
                    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                t2 = time.perf_counter()
            results[name]["prefill"].append(prompt.shape[1] / (t1 - t0))
            results[name]["decode"].append(args.new_tokens / (t2 - t1))
    print(f"CPU: {cpu_model()}; backend {exaq_cpu.backend()}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, python {platform.python_version()}; 1 torch thread; "
          f"prompt {prompt.shape[1]} tokens, {args.new_tokens} new, {args.rounds} interleaved rounds (medians)")
    print("| attention | prefill tok/s | decode tok/s | decode vs eager |")
    print("|---|---|---|---|")
    base = statistics.median(results["eager"]["decode"])
    for name, r in results.items():
        dec = statistics.median(r["decode"])
        print(f"| {name} | {statistics.median(r['prefill']):.0f} | {dec:.1f} | {dec / base:.2f} |")


if __name__ == "__main__":
    main()
