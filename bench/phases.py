"""Where a softmax call's time goes, phase by phase, on every SIMD backend.

    python bench/phases.py [--shape 256x2048] [--repeat 200]

Each phase is timed through the compiled core's own entries (no Python
argument handling), interleaved round by round, medians:

- ``call overhead``: ``softmax_into`` of a (1, 16) array: Python + Cython + driver setup;
- ``packed`` / ``float``, each with the default pooled clip (two passes: the
  statistics pass over the whole call, then quantize per row) and with a
  static clip (one pass per row: row maximum, then quantize);
- ``stats pass`` = float gauss - float static: the pooled statistics pass
  (max, sum, sum of squares of every row) less a row-maximum sweep;
- ``expand`` = float - packed (same clip): writing float32 probabilities
  from byte codes instead of packing codes;
- ``exact``: our exact softmax (row max, exp + store + sum, scale).

Differences of medians are estimates (each phase also moves data through the
caches differently when it runs alone); they say which pass to work on.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import exaq_cpu  # noqa: E402
from exaq_cpu.__main__ import cpu_model  # noqa: E402
from report import interleaved, make_scores, parse_shape, versions  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256x2048")
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    x = make_scores(*parse_shape(args.shape))
    out = np.empty_like(x)
    tiny, tiny_out = np.zeros((1, 16), np.float32), np.empty((1, 16), np.float32)
    print(f"CPU: {cpu_model()}; {', '.join(versions())}; scores {args.shape}, 1 thread")
    print("| backend (us) | call overhead | packed gauss | packed static | float gauss | float static | "
          "stats pass | expand | exact | exact / float gauss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for be in [b for b in exaq_cpu.backends() if b != "scalar"]:
        exaq_cpu.set_backend(be)
        c = {
            "overhead": lambda: exaq_cpu.softmax_into(tiny, tiny_out, 2),
            "packed": lambda: exaq_cpu.softmax(x, 2, output="packed", threads=1),
            "packed static": lambda: exaq_cpu.softmax(x, 2, clip=-6.0, output="packed", threads=1),
            "float": lambda: exaq_cpu.softmax_into(x, out, 2),
            "float static": lambda: exaq_cpu.softmax_into(x, out, 2, clip=-6.0),
            "exact": lambda: exaq_cpu.softmax_into(x, out, None),
        }
        m, _ = interleaved(c, args.budget)
        us = {k: v * 1e6 for k, v in m.items()}
        print(f"| {be} | {us['overhead']:.1f} | {us['packed']:.1f} | {us['packed static']:.1f} | "
              f"{us['float']:.1f} | {us['float static']:.1f} | {us['float'] - us['float static']:.1f} | "
              f"{us['float'] - us['packed']:.1f} | {us['exact']:.1f} | {us['exact'] / us['float']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
