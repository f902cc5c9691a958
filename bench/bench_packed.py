"""Packed output and the accumulation phase, single thread, scores of shape (256, 2048).

    python -m pytest bench/bench_packed.py --benchmark-only --benchmark-group-by=group
    python bench/bench_packed.py [--repeat 300]    # one-run table: interleaved medians, ratios

Accumulation phase alone (the row sums, 2-bit codes, one shared exponent table):
float ``sum(exp(t))`` (our SIMD exp), LUTexp + add over byte codes, LUTsum over
packed bytes (the paper's 256-entry table, and the backend's kernel).
Whole softmax: ``softmax(x, 2, output="packed")`` against ``torch.softmax``.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import exaq_cpu  # noqa: E402
from exaq_cpu import _core  # noqa: E402
from exaq_cpu.packed import exponent_table  # noqa: E402

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

SHAPE = (256, 2048)
BITS = 2
LO = -6.0


def make_data(bits=BITS):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    q = exaq_cpu.quantize(x, bits, clip=LO)
    codes = np.ascontiguousarray(q.codes)
    packed = exaq_cpu.pack(codes, bits)
    lut = np.zeros((1, 16), np.float32)
    lut[0, :1 << bits] = exponent_table(LO, bits)
    return {"x": x, "shifts": x.max(axis=1), "codes": codes, "packed": packed, "lut": lut,
            "sums": np.empty(SHAPE[0], np.float64)}


def accumulation_candidates(d, bits=BITS):
    n = SHAPE[1]
    return {
        "float sum(exp(t))": lambda: _core.exp_sum(d["x"], d["shifts"], d["sums"]),
        "LUTexp + add (byte codes)": lambda: _core.lutexp_sum(d["codes"], d["lut"], d["sums"]),
        "LUTsum, paper table (packed)": lambda: _core.lutsum(d["packed"], n, bits, d["lut"], d["sums"], None, True),
        "LUTsum, backend kernel (packed)": lambda: _core.lutsum(d["packed"], n, bits, d["lut"], d["sums"]),
    }


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.mark.benchmark(group="accumulate-256x2048-2bit")
@pytest.mark.parametrize("method", list(accumulation_candidates(make_data())))
@pytest.mark.parametrize("backend", exaq_cpu.backends())
def test_accumulate(benchmark, data, method, backend):
    exaq_cpu.set_backend(backend)
    try:
        benchmark(accumulation_candidates(data)[method])
    finally:
        exaq_cpu.set_backend(exaq_cpu.backends()[-1])


@pytest.mark.benchmark(group="packed-softmax-256x2048")
@pytest.mark.parametrize("clip", ["gauss", LO])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packed_softmax(benchmark, data, bits, clip):
    benchmark(exaq_cpu.softmax, data["x"], bits, clip=clip, output="packed")


@pytest.mark.benchmark(group="packed-softmax-256x2048")
def test_float_softmax_exaq(benchmark, data):
    out = np.empty_like(data["x"])
    benchmark(exaq_cpu.softmax, data["x"], 2, out=out)


@pytest.mark.benchmark(group="packed-softmax-256x2048")
@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_torch(benchmark, data):
    benchmark(torch.softmax, torch.from_numpy(data["x"]), -1)


def main():
    import argparse
    import platform
    import time

    from exaq_cpu.__main__ import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()

    def medians(cands):
        times = {k: [] for k in cands}
        for f in cands.values():
            f()
        for _ in range(args.repeat):
            for k, f in cands.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        return {k: float(np.median(v)) for k, v in times.items()}

    print(f"CPU: {cpu_model()}  Python {platform.python_version()}  NumPy {np.__version__}"
          + (f"  torch {torch.__version__}" if torch else ""))
    print(f"shape {SHAPE}, single thread, medians of {args.repeat} interleaved rounds\n")
    d = make_data()
    for backend in exaq_cpu.backends():
        exaq_cpu.set_backend(backend)
        m = medians(accumulation_candidates(d))
        base = m["float sum(exp(t))"]
        print(f"accumulation phase, 2-bit, backend {backend}:")
        for k, v in m.items():
            print(f"  {k:34s} {v * 1e6:9.1f} us   {base / v:5.2f}x vs float exp-sum")
    exaq_cpu.set_backend(exaq_cpu.backends()[-1])
    cands = {f"exaq packed bits={b} clip={c}": (lambda b=b, c=c: exaq_cpu.softmax(d["x"], b, clip=c, output="packed"))
             for b in (2, 3, 4) for c in ("gauss", LO)}
    out = np.empty_like(d["x"])
    cands["exaq float bits=2"] = lambda: exaq_cpu.softmax(d["x"], 2, out=out)
    if torch is not None:
        t = torch.from_numpy(d["x"])
        cands["torch.softmax"] = lambda: torch.softmax(t, -1)
    m = medians(cands)
    ref = m.get("torch.softmax")
    print(f"\nwhole softmax, backend {exaq_cpu.backend()}:")
    for k, v in m.items():
        print(f"  {k:34s} {v * 1e6:9.1f} us" + (f"   {ref / v:5.2f}x vs torch" if ref else ""))


if __name__ == "__main__":
    main()
