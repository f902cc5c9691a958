"""One-run comparison table: medians and ratios, with CPU model and versions.

    python bench/report.py [--repeat 200]

Single thread (thread caps set before NumPy is imported).  The machine may be
shared and noisy: every candidate is timed in interleaved rounds and the median
of all rounds is reported, so drifts in load hit every candidate alike.
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


def interleaved_medians(candidates, repeat):
    times = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()
    for _ in range(repeat):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def with_backend(name, fn):
    def run():
        previous = exaq_cpu.backend()
        exaq_cpu.set_backend(name)
        try:
            fn()
        finally:
            exaq_cpu.set_backend(previous)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--cols", type=int, default=2048)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.rows, args.cols)) * 3).astype(np.float32)
    out = np.empty_like(x)
    versions = [f"exaq_cpu {exaq_cpu.__version__}", f"numpy {np.__version__}",
                f"python {platform.python_version()}"]
    candidates = {}
    for backend in exaq_cpu.backends():
        if backend == "scalar":
            continue
        for bits in (2, 3, 4):
            candidates[f"exaq bits={bits} [{backend}]"] = with_backend(
                backend, lambda b=bits: exaq_cpu.softmax(x, b, out=out))
        candidates[f"exaq bits=2 static clip [{backend}]"] = with_backend(
            backend, lambda: exaq_cpu.softmax(x, 2, clip=-6.0, out=out))
        candidates[f"exaq bits=None (exact) [{backend}]"] = with_backend(
            backend, lambda: exaq_cpu.softmax(x, None, out=out))
    candidates["numpy exp/sum"] = lambda: np.exp(x - x.max(-1, keepdims=True)) / np.exp(
        x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    try:
        import scipy
        import scipy.special

        versions.append(f"scipy {scipy.__version__}")
        candidates["scipy.special.softmax"] = lambda: scipy.special.softmax(x, axis=-1)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
        versions.append(f"torch {torch.__version__}")
        xt = torch.from_numpy(x)
        candidates["torch.softmax"] = lambda: torch.softmax(xt, -1)
    except ImportError:
        pass

    medians = interleaved_medians(candidates, args.repeat)
    print(f"CPU: {cpu_model()}; {', '.join(versions)}; 1 thread; "
          f"x float32 {x.shape}; median of {args.repeat} interleaved rounds")
    refs = [r for r in ("torch.softmax", "scipy.special.softmax") if r in medians]
    best = exaq_cpu.backends()[-1]
    exact = medians.get(f"exaq bits=None (exact) [{best}]")
    header = "| variant | median (ms) | " + " | ".join(f"vs {r}" for r in refs) + " | vs our exact |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, t in medians.items():
        ratios = " | ".join(f"{medians[r] / t:.2f}x" for r in refs)
        print(f"| {name} | {t * 1e3:.3f} | {ratios} | {exact / t:.2f}x |")


if __name__ == "__main__":
    main()
