"""python -m exaq_cpu: this CPU's backends, and EXAQ on an attention-shaped example.

Prints the capabilities and the active backend, then runs EXAQ softmax at 2, 3
and 4 bits on built-in causal attention scores (random queries and keys with a
shared low-rank structure, scaled by 1/sqrt(d)), and reports the error against
the exact float softmax and the time against NumPy and SciPy (single thread).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import exaq_cpu  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def attention_scores(heads=8, queries=256, keys=1024, dim=64, sigma=3.0, seed=0) -> np.ndarray:
    """Causal scores q.k/sqrt(d) of shape (heads, queries, keys), rescaled to a
    pooled standard deviation `sigma` (real LLM attention: about 2 to 7); the
    queries are the last `queries` positions, so each row sees a prefix of the keys."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, dim))
    q = rng.standard_normal((heads, queries, 8)) @ basis + 0.5 * rng.standard_normal((heads, queries, dim))
    k = rng.standard_normal((heads, keys, 8)) @ basis + 0.5 * rng.standard_normal((heads, keys, dim))
    s = q @ k.transpose(0, 2, 1) / np.sqrt(dim)
    s = (s * (sigma / s.std())).astype(np.float32)
    pos_q = np.arange(keys - queries, keys)[:, None]
    s[:, np.arange(keys)[None, :] > pos_q] = -np.inf
    return s


def numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exaq_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions (median)")
    args = parser.parse_args(argv)

    print(f"exaq_cpu {exaq_cpu.__version__}  numpy {np.__version__}  python {platform.python_version()}")
    print(f"CPU: {cpu_model()}")
    print(f"backends this CPU can run: {', '.join(exaq_cpu.backends())}  (known: {', '.join(exaq_cpu.all_backends())})")
    print(f"active backend: {exaq_cpu.backend()}  (force one with EXAQ_CPU_BACKEND=name)")

    x = attention_scores()
    stats = exaq_cpu.score_stats(x)
    print(f"\nattention scores {x.shape}, causal mask; pooled sigma {stats['sigma']:.3f}, "
          f"min {stats['min']:.2f}")
    exact = exaq_cpu.softmax(x, None).astype(np.float64)
    reference = numpy_softmax(x.astype(np.float64))
    valid = np.isfinite(x)
    print(f"{'variant':22s} {'max|p-p_ref|':>13s} {'mean KL':>10s} {'top-1 kept':>10s}")
    rows = [("exact float (ours)", exact)]
    for bits in (2, 3, 4):
        for clip in ("gauss", "row"):
            rows.append((f"EXAQ {bits}-bit {clip}", exaq_cpu.softmax(x, bits, clip=clip).astype(np.float64)))
    for name, p in rows:
        with np.errstate(divide="ignore", invalid="ignore"):
            # KL between distributions: p renormalized in float64 (its float32 rows sum to 1 only
            # within rounding, which made the exact kernel's KL come out slightly negative)
            q = p / p.sum(-1, keepdims=True)
            kl = np.where(valid, reference * (np.log(reference) - np.log(np.maximum(q, 1e-300))), 0).sum(-1)
            kl = np.maximum(kl, 0.0)  # Gibbs: KL >= 0; what float64 rounding leaves below 0 is 0
        # quantized rows have ties at the top code: ask whether the true top-1 is among them
        best = np.take_along_axis(p, np.argmax(reference, -1)[..., None], -1)[..., 0]
        top1 = np.mean(best == p.max(-1))
        print(f"{name:22s} {np.abs(p - reference).max():13.2e} {kl.mean():10.2e} {top1:10.3f}")

    print(f"\nspeed, single thread, median of {args.repeat}:")
    out = np.empty_like(x)
    timings = {
        "numpy exp/sum": median_ms(lambda: numpy_softmax(x), args.repeat),
        "exaq exact (bits=None)": median_ms(lambda: exaq_cpu.softmax(x, None, out=out, threads=1), args.repeat),
        "exaq bits=2": median_ms(lambda: exaq_cpu.softmax(x, 2, out=out, threads=1), args.repeat),
        "exaq bits=4": median_ms(lambda: exaq_cpu.softmax(x, 4, out=out, threads=1), args.repeat),
    }
    try:
        import scipy.special

        timings["scipy.special.softmax"] = median_ms(lambda: scipy.special.softmax(x, axis=-1), args.repeat)
    except ImportError:
        print("  (scipy not installed: no scipy comparison)")
    base = timings["numpy exp/sum"]
    for name, ms in timings.items():
        print(f"  {name:24s} {ms:8.3f} ms   {base / ms:6.2f}x numpy")


if __name__ == "__main__":
    main()
