"""Softmax comparison in one process: every shape, every backend this CPU has.

    python bench/report.py                       # all shapes, markdown table + PNG plot
    python bench/report.py --shapes 256x2048 9x1x512 --budget 0.2

For each shape, every contender (NumPy, ``scipy.special.softmax``,
``torch.softmax`` with one thread, and ours: exact, EXAQ bits 2/3/4, bits 2 with a
static clip, and the packed output, each on every SIMD backend forced) is timed
in interleaved rounds: one call of each in turn, round after round, so a drift
in the machine's load hits every contender alike.  Medians of the rounds are
reported with the ratios the issue tracker asks about, and the run is repeated
``--runs`` times to show how much the figures move.  Single thread unless a
contender says otherwise (``threads=2`` rows).  Prints the CPU model and versions.

Writes ``--md`` (markdown tables) and ``--png`` (ns/element against row length,
log-log, one line per contender, a panel per backend).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import exaq_cpu  # noqa: E402
from exaq_cpu.__main__ import cpu_model  # noqa: E402

# the shapes of the issue tracker's softmax table and of the benchmark suite;
# "causal" masks the upper triangle of the last two axes with -inf
SHAPES = ["256x2048", "4096x128", "1024x512", "32x32768", "9x1x512", "1x1024", "32x512x512causal",
          "64x8192", "1x1048576", "32x4096"]
# row lengths of the plot, each at about 2^19 entries in all
SWEEP = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 32768, 1 << 19]
STATIC_CLIP = -6.0


def parse_shape(text):
    causal = text.endswith("causal")
    dims = tuple(int(d) for d in text.replace("causal", "").split("x"))
    return dims, causal


def make_scores(dims, causal, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(dims) * 3).astype(np.float32)
    if causal:
        q, k = dims[-2], dims[-1]
        x[..., np.arange(k)[None, :] > np.arange(q)[:, None] + (k - q)] = -np.inf
    return x


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def interleaved(candidates, budget):
    """Median seconds of each candidate over interleaved rounds; the number of
    rounds is set so that the slowest contender gets about `budget` seconds."""
    first = {}
    for name, fn in candidates.items():
        fn()
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    rounds = int(min(2000, max(7, budget / max(sum(first.values()), 1e-7) * len(candidates) / 4)))
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}, rounds


def with_backend(backend, fn):
    def run():
        exaq_cpu.set_backend(backend)
        fn()
    return run


def contenders(x, backends, threads_rows=False, peers=True):
    """name -> callable, and the name of the reference entries"""
    out = np.empty_like(x)
    c = {}
    if peers:
        c["numpy"] = lambda: numpy_softmax(x)
        try:
            import scipy.special

            c["scipy"] = lambda: scipy.special.softmax(x, axis=-1)
        except ImportError:
            pass
        try:
            import torch

            torch.set_num_threads(1)
            xt = torch.from_numpy(x)
            c["torch"] = lambda: torch.softmax(xt, -1)
        except ImportError:
            pass
    for be in backends:
        c[f"exact [{be}]"] = with_backend(be, lambda: exaq_cpu.softmax(x, None, out=out, threads=1))
        for bits in (2, 3, 4):
            c[f"bits={bits} [{be}]"] = with_backend(
                be, lambda b=bits: exaq_cpu.softmax(x, b, out=out, threads=1))
        c[f"bits=2 static [{be}]"] = with_backend(
            be, lambda: exaq_cpu.softmax(x, 2, clip=STATIC_CLIP, out=out, threads=1))
        c[f"packed [{be}]"] = with_backend(be, lambda: exaq_cpu.softmax(x, 2, output="packed", threads=1))
        if threads_rows:
            c[f"bits=2 threads=2 [{be}]"] = with_backend(
                be, lambda: exaq_cpu.softmax(x, 2, out=out, threads=2))
            c[f"exact threads=2 [{be}]"] = with_backend(
                be, lambda: exaq_cpu.softmax(x, None, out=out, threads=2))
    return c


def versions():
    v = [f"exaq_cpu {exaq_cpu.__version__}", f"numpy {np.__version__}", f"python {platform.python_version()}"]
    for mod in ("scipy", "torch"):
        try:
            v.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            v.append(f"{mod} not installed")
    return v


def table(shape_name, medians, backends):
    """markdown rows, one per backend: the issue's columns"""
    lines = []
    for be in backends:
        m = {k.replace(f" [{be}]", ""): v for k, v in medians.items() if k.endswith(f"[{be}]") or "[" not in k}

        def us(key):
            return f"{m[key] * 1e6:.1f}" if key in m else "-"

        def ratio(a, b):
            return f"{m[a] / m[b]:.2f}" if a in m and b in m else "-"
        lines.append(f"| {shape_name} | {be} | {us('bits=2')} | {us('exact')} | {us('bits=2 static')} | "
                     f"{us('packed')} | {us('torch')} | {us('scipy')} | {us('numpy')} | "
                     f"**{ratio('exact', 'bits=2')}** | **{ratio('torch', 'bits=2')}** | "
                     f"{ratio('scipy', 'bits=2')} | {ratio('torch', 'packed')} |")
    return lines


HEADER = ("| shape | backend | bits=2 (us) | exact | bits=2 static | packed | torch | scipy | numpy | "
          "exact/bits=2 | torch/bits=2 | scipy/bits=2 | torch/packed |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def plot(sweep, backends, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(backends), figsize=(6.5 * len(backends), 5), squeeze=False, sharey=True)
    for ax, be in zip(axes[0], backends):
        names = [k for k in next(iter(sweep.values())) if k.endswith(f"[{be}]") or "[" not in k]
        for name in names:
            ns = sorted(sweep)
            per_element = [sweep[n][name] * 1e9 / (n * max(1, (1 << 19) // n)) for n in ns]
            ax.loglog(ns, per_element, marker="o", ms=3, label=name.replace(f" [{be}]", ""))
        ax.set_title(f"softmax, ~2^19 float32 entries per call, backend {be}")
        ax.set_xlabel("row length n")
        ax.set_ylabel("ns per element (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES)
    parser.add_argument("--backends", nargs="*", default=[b for b in exaq_cpu.backends() if b != "scalar"])
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per contender and shape")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole table to see the spread")
    parser.add_argument("--md", default="bench/softmax_report.md")
    parser.add_argument("--png", default="bench/softmax_ns_per_element.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--threads-rows", action="store_true", help="add threads=2 rows for big shapes")
    args = parser.parse_args()

    head = f"CPU: {cpu_model()}; {', '.join(versions())}; 1 thread unless stated"
    print(head)
    md = [head, "", HEADER]
    print(HEADER)
    for run in range(args.runs):
        for text in args.shapes:
            dims, causal = parse_shape(text)
            x = make_scores(dims, causal)
            big = x.size >= 1 << 19
            medians, rounds = interleaved(contenders(x, args.backends, args.threads_rows and big), args.budget)
            rows = table(text, medians, args.backends)
            for line in rows:
                print(line + (f" run {run + 1}" if args.runs > 1 else ""), flush=True)
            md += rows
            for name, t in medians.items():
                if "threads=2" in name:
                    single = medians[name.replace(" threads=2", "")]
                    line = f"  {text} {name}: {t * 1e6:.1f} us, {single / t:.2f}x one thread"
                    print(line)
                    md.append("")
                    md.append(line)
    with open(args.md, "w") as f:
        f.write("\n".join(md) + "\n")
    if not args.no_plot:
        sweep = {}
        for n in SWEEP:
            x = make_scores((max(1, (1 << 19) // n), n), False)
            sweep[n], _ = interleaved(contenders(x, args.backends), args.budget / 4)
        plot(sweep, args.backends, args.png)
        print(f"wrote {args.md} and {args.png}")


if __name__ == "__main__":
    main()
