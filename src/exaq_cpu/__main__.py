"""python -m exaq_cpu: this CPU's backends, and EXAQ on an attention-shaped example.

Prints the capabilities and the active backend, then runs EXAQ softmax at 2, 3
and 4 bits (gauss and row clips), our exact kernel, NumPy and SciPy on built-in
causal attention scores (random queries and keys with a shared low-rank
structure, scaled by 1/sqrt(d)): one table of each variant's error against the
float64 softmax (largest probability error, mean KL, the attention output's
error) and its time on one thread, and a PNG of error against time.
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
    parser.add_argument("--png", default="exaq_cpu_summary.png",
                        help="write the error-vs-speed plot here (default %(default)s; '' for none)")
    args = parser.parse_args(argv)

    print(f"exaq_cpu {exaq_cpu.__version__}  numpy {np.__version__}  python {platform.python_version()}")
    print(f"CPU: {cpu_model()}")
    print(f"backends this CPU can run: {', '.join(exaq_cpu.backends())}  (known: {', '.join(exaq_cpu.all_backends())})")
    print(f"active backend: {exaq_cpu.backend()}  (force one with EXAQ_CPU_BACKEND=name)")

    x = attention_scores()
    stats = exaq_cpu.score_stats(x)
    print(f"\nattention scores {x.shape}, causal mask; pooled sigma {stats['sigma']:.3f}, "
          f"min {stats['min']:.2f}; error against the float64 softmax, speed single thread "
          f"(median of {args.repeat}, output array reused)")
    reference = numpy_softmax(x.astype(np.float64))
    values = np.random.default_rng(1).standard_normal((x.shape[0], x.shape[-1], 64))
    ref_out = reference @ values
    valid = np.isfinite(x)
    out = np.empty_like(x)

    variants = [("exact float (ours)", lambda: exaq_cpu.softmax(x, None, out=out, threads=1))]
    for bits in (2, 3, 4):
        for clip in ("gauss", "row"):
            variants.append((f"EXAQ {bits}-bit {clip}",
                             lambda b=bits, c=clip: exaq_cpu.softmax(x, b, clip=c, out=out, threads=1)))
    variants.append(("numpy exp/sum (float32)", lambda: numpy_softmax(x)))
    try:
        import scipy.special

        variants.append(("scipy.special.softmax", lambda: scipy.special.softmax(x, axis=-1)))
    except ImportError:
        print("  (scipy not installed: no scipy row)")

    print(f"{'variant':24s} {'max|dp|':>9s} {'mean KL':>9s} {'p@V err':>9s} {'ms':>8s} {'vs exact':>9s} "
          f"{'vs numpy':>9s}")
    rows = []
    for name, run in variants:
        p = np.array(run(), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            # KL between distributions: p renormalized in float64 (float32 rows sum to 1 only
            # within rounding); what float64 rounding leaves below 0 is 0 (Gibbs)
            q = p / p.sum(-1, keepdims=True)
            kl = np.where(valid, reference * (np.log(reference) - np.log(np.maximum(q, 1e-300))), 0).sum(-1)
        kl = float(np.maximum(kl, 0.0).mean())
        out_err = float(np.linalg.norm(p @ values - ref_out) / np.linalg.norm(ref_out))
        rows.append((name, float(np.abs(p - reference).max()), kl, out_err, median_ms(run, args.repeat)))
    exact_ms = rows[0][4]
    numpy_ms = next(r[4] for r in rows if r[0].startswith("numpy"))
    for name, dp, kl, out_err, ms in rows:
        print(f"{name:24s} {dp:9.2e} {kl:9.2e} {out_err:9.2e} {ms:8.3f} {exact_ms / ms:8.2f}x {numpy_ms / ms:8.2f}x")
    print("(p@V err: relative error of the attention output with random values V, what a model consumes)")
    if args.png:
        _plot(rows, args.png)


def _plot(rows, path) -> None:
    """Error (attention-output error) against time, one point per variant."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install matplotlib, or --png '' to skip)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, _, _, out_err, ms in rows:
        ax.scatter(ms, max(out_err, 1e-9), s=30)
        ax.annotate(name, (ms, max(out_err, 1e-9)), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time per call, ms (1 thread)")
    ax.set_ylabel("attention output error (relative)")
    ax.set_title(f"exaq_cpu on {cpu_model()} ({exaq_cpu.backend()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {os.path.abspath(path)}")

if __name__ == "__main__":
    main()
