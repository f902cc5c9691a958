"""Compare clip modes on the LLaMA evaluation (``python -m exaq_cpu.clipping llama-compare``).

Loads the model once, computes nothing twice that does not change, and runs
``exaq_cpu.llama.evaluate.evaluate`` for every (bits, floor, mode) with the
EXAQ softmax of ``exaq_cpu.llama.model.ExaqSoftmax``.  Needs the compiled core
and the llama subpackage (and its default model package) -- it is a study
tool, not part of the tested API.
"""

from __future__ import annotations

import json
import sys
import time


def llama_compare(bits_list, floors, modes, *, tokens=1024, ctx=256, model=None, out=sys.stdout):
    """Perplexity, KL(float || variant) and top-1 agreement of every (bits, floor, mode).

    Same metrics as ``python -m exaq_cpu.llama eval`` (non-overlapping windows
    of ``ctx`` tokens of the package's default evaluation text), with the float
    model's log-probabilities computed once and reused.
    """
    import numpy as np

    from exaq_cpu.llama.evaluate import eval_tokens, windows
    from exaq_cpu.llama.gguf_loader import load_gguf
    from exaq_cpu.llama.model import ExaqSoftmax, LlamaModel, LlamaWeights
    from exaq_cpu.llama.tokenizer import GGUFTokenizer

    def log_softmax(z):
        z = z.astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    contents = load_gguf(model)
    weights = LlamaWeights.from_gguf(contents)
    ids = eval_tokens(GGUFTokenizer(contents.tokenizer), tokens)
    chunks = windows(ids, ctx)
    ref = LlamaModel(weights)
    cache = ref.new_cache(ctx)
    ref_logp = []
    nll = 0.0
    for ch in chunks:
        cache.reset()
        lp = log_softmax(ref.forward(ch, cache)[:-1])
        ref_logp.append(lp)
        nll -= float(lp[np.arange(len(ch) - 1), ch[1:]].sum())
    predicted = sum(len(ch) - 1 for ch in chunks)
    base_ppl = float(np.exp(nll / predicted))
    rows = [{"bits": None, "floor": None, "mode": "float", "perplexity": base_ppl, "kl": 0.0, "top1": 1.0}]
    print(f"# {contents.name}: {len(chunks)} windows of {ctx} tokens; float perplexity {base_ppl:.4f}",
          file=out, flush=True)
    print("| bits | floor | clip mode | perplexity | KL(float‖variant) nats/token | top-1 agreement |", file=out)
    print("|---|---|---|---|---|---|", file=out, flush=True)
    for b in bits_list:
        for fl in floors:
            for mode in modes:
                t0 = time.time()
                var = LlamaModel(weights, ExaqSoftmax(b, clip=None if mode == "naive" else mode, floor=fl))
                vc = var.new_cache(ctx)
                nll = kl = 0.0
                agree = 0
                for ch, rl in zip(chunks, ref_logp):
                    vc.reset()
                    lp = log_softmax(var.forward(ch, vc)[:-1])
                    nll -= float(lp[np.arange(len(ch) - 1), ch[1:]].sum())
                    kl += float((np.exp(rl) * (rl - lp)).sum())
                    agree += int((rl.argmax(-1) == lp.argmax(-1)).sum())
                r = {"bits": b, "floor": fl, "mode": mode, "perplexity": float(np.exp(nll / predicted)),
                     "kl": kl / predicted, "top1": agree / predicted}
                rows.append(r)
                print(f"| {b} | {fl} | {mode} | {r['perplexity']:.3f} | {r['kl']:.4f} | "
                      f"{100 * r['top1']:.1f}% |", file=out, flush=True)
                print(f"  ({mode} {b}-bit floor={fl}: {time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return rows


def main_compare(a) -> int:
    rows = llama_compare(a.bits, a.floor, a.modes, tokens=a.tokens, ctx=a.ctx, model=a.model)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
