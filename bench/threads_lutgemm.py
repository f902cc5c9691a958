"""LUT-GEMM GEMV on 1 and 2 threads of the worker pool, int8 tables, every SIMD backend.

    python bench/threads_lutgemm.py [--rounds 40]

Uniform BCQ, group 128, shapes 4096x4096 and 11008x4096 at 2 and 4 bits; the two
thread counts are timed in interleaved rounds, medians.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import exaq_cpu  # noqa: E402
from exaq_cpu import lutgemm  # noqa: E402
from exaq_cpu.__main__ import cpu_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; exaq_cpu {exaq_cpu.__version__}; cores {exaq_cpu._core.cpu_count()}")
    rng = np.random.default_rng(0)
    for shape in [(4096, 4096), (11008, 4096)]:
        W = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        for bits in (2, 4):
            Wq = lutgemm.quantize_weights(W, bits=bits, group_size=128, method="uniform")
            Wq.packed_int8()  # the repacked layout, built once
            x = rng.standard_normal(shape[1]).astype(np.float32)
            for backend in [b for b in exaq_cpu.backends() if b != "scalar"]:
                exaq_cpu.set_backend(backend)
                times = {1: [], 2: []}
                for _ in range(args.rounds):
                    for threads in times:
                        start = time.perf_counter()
                        lutgemm.lut_gemm(x, Wq, threads=threads)
                        times[threads].append(time.perf_counter() - start)
                one, two = (float(np.median(times[t])) * 1e3 for t in (1, 2))
                print(f"{shape[0]}x{shape[1]} {bits}-bit int8 [{backend}]: 1 thread {one:.3f} ms, "
                      f"2 threads {two:.3f} ms: {one / two:.2f}x", flush=True)


if __name__ == "__main__":
    main()
