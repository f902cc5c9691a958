"""LUT-GEMM (exaq_cpu.lutgemm): kernels against x @ W_deq.T on every backend, both
float-table designs (precision="exact") and the int8 tables (precision="int8",
within their worst-case bound and bit-identical across backends), BCQ fitting
quality, the exact uniform->BCQ conversion, packing round trips, and argument
checking."""
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exaq_cpu
from exaq_cpu import lutgemm as L

RNG = np.random.default_rng(1234)


def _weights(rows, cols, kind="gauss", seed=0):
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        return rng.standard_normal((rows, cols)).astype(np.float32)
    # heavy-tailed like trained LLM weights: Student-t(3) with a few outlier columns
    W = rng.standard_t(3, (rows, cols)) * 0.02
    W[:, rng.choice(cols, max(1, cols // 64), replace=False)] *= 8
    return W.astype(np.float32)


def _magnitudes(Wq):
    """Per weight, sum_i |alpha_i| + |offset|: the size of the terms a kernel adds up."""
    ones = np.full_like(Wq.planes, 0xFF)  # every b_i = +1
    return L.BCQMatrix(ones, np.abs(Wq.alphas), np.abs(Wq.offsets), Wq.shape, Wq.bits,
                       Wq.group_size).dequantize().astype(np.float64)


def _assert_matches(y, x, Wq):
    """1e-4 relative to the error scale of the products (float32 tables)."""
    Wd = Wq.dequantize().astype(np.float64)
    ref = x.astype(np.float64) @ Wd.T
    # float32 partial sums err in proportion to |x| times the alphas and offsets, which
    # can be far larger than |W| where they cancel (uniform codes with an offset)
    scale = np.abs(x.astype(np.float64)) @ _magnitudes(Wq).T + np.abs(x).sum(-1, keepdims=True) * 1e-6
    np.testing.assert_array_less(np.abs(y - ref), 1e-4 * scale + 1e-30)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _int8_bound(x, Wq):
    """Worst case of the int8 tables per output: each of the group_size/4 lookups per
    row, group and bit-plane errs by at most s_g/2, s_g = (largest |x0|+..+|x3| of a
    quad in group g) / 127; so |y - x @ W_deq.T| <= sum_g s_g * gs/8 * sum_i |alpha_i|."""
    x = np.atleast_2d(x).astype(np.float64)
    rows, cols = Wq.shape
    gs = Wq._gs
    groups = -(-cols // gs)
    xp = np.zeros((x.shape[0], groups * gs))
    xp[:, :cols] = x
    s = np.abs(xp).reshape(x.shape[0], groups, gs // 4, 4).sum(-1).max(-1) / 127  # (tokens, groups)
    tiles = -(-rows // 16)
    A = np.abs(Wq.alphas.astype(np.float64)).reshape(tiles, groups, Wq.bits, 16).sum(2)
    A = A.transpose(0, 2, 1).reshape(tiles * 16, groups)[:rows]  # (rows, groups)
    return s @ A.T * (gs / 8)


def _assert_int8(y, x, Wq):
    Wd = Wq.dequantize().astype(np.float64)
    ref = x.astype(np.float64) @ Wd.T
    scale = np.abs(x.astype(np.float64)) @ _magnitudes(Wq).T + np.abs(x).sum(-1, keepdims=True) * 1e-6
    bound = _int8_bound(x, Wq).reshape(ref.shape) * 1.0001 + 1e-4 * scale
    np.testing.assert_array_less(np.abs(y - ref), bound + 1e-30)


@pytest.mark.parametrize("table", ["mu4", "mu8"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lut_gemm_matches_dequantized(backend, bits, table):
    W = _weights(70, 333, seed=bits)
    Wq = L.quantize_weights(W, bits=bits, group_size=64, method="greedy")
    x = RNG.standard_normal((3, 333)).astype(np.float32)
    _assert_matches(L.lut_gemm(x, Wq, table=table, precision="exact"), x, Wq)
    _assert_matches(L.lut_gemm(x[0], Wq, table=table, threads=2, precision="exact"), x[0], Wq)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_int8_within_bound(backend, bits):
    W = _weights(70, 333, seed=bits)
    Wq = L.quantize_weights(W, bits=bits, group_size=64, method="greedy")
    x = RNG.standard_normal((3, 333)).astype(np.float32)
    y = L.lut_gemm(x, Wq)  # int8 is the default
    assert np.array_equal(y, L.lut_gemm(x, Wq, precision="int8"))
    _assert_int8(y, x, Wq)
    y1 = L.lut_gemm(x[0], Wq, threads=2)
    _assert_int8(y1, x[0], Wq)
    assert np.array_equal(y1, y[0])  # a token's result does not depend on its batch


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_int8_typical_error(bits):
    """Statistically far below the worst case: ~1% relative for Gaussian activations."""
    W = _weights(256, 1024, "heavy", seed=bits)
    Wq = L.quantize_weights(W, bits=bits, group_size=128, method="uniform")
    x = RNG.standard_normal((4, 1024)).astype(np.float32)
    exact = L.lut_gemm(x, Wq, precision="exact")
    rel = np.linalg.norm(L.lut_gemm(x, Wq) - exact) / np.linalg.norm(exact)
    assert rel < 0.03, rel


def test_backends_agree_bit_for_bit():
    W = _weights(100, 520, "heavy")
    Wq = L.quantize_weights(W, bits=3, group_size=128, method="greedy")
    x = RNG.standard_normal((2, 520)).astype(np.float32)
    for table, precision in (("mu4", "exact"), ("mu8", "exact"), ("auto", "int8")):
        results = {}
        for name in exaq_cpu.backends():
            results[name] = L.lut_gemm(x, Wq, table=table, method="lut", precision=precision, backend=name)
        for name, y in results.items():
            assert np.array_equal(y, results["scalar"]), (name, table, precision)


def test_threads_and_out(backend):
    Wq = L.quantize_weights(_weights(200, 256), bits=2, group_size=32, method="greedy")
    x = RNG.standard_normal((4, 256)).astype(np.float32)
    y1 = L.lut_gemm(x, Wq, threads=1)
    out = np.full((4, 200), np.nan, np.float32)
    assert L.lut_gemm(x, Wq, out=out, threads=3) is out
    assert np.array_equal(out, y1)
    # input and out off their float grid (np.frombuffer at an odd offset)
    raw_x, raw_y = np.zeros(x.nbytes + 1, np.uint8), np.zeros(out.nbytes + 1, np.uint8)
    x_odd = np.frombuffer(raw_x.data, np.float32, x.size, offset=1).reshape(x.shape)
    y_odd = np.frombuffer(raw_y.data, np.float32, out.size, offset=1).reshape(out.shape)
    x_odd[...] = x
    assert not x_odd.flags.aligned and not y_odd.flags.aligned
    assert L.lut_gemm(x_odd, Wq, out=y_odd) is y_odd
    assert np.array_equal(y_odd, y1)


def test_batched_shapes_and_auto_switch():
    Wq = L.quantize_weights(_weights(48, 64), bits=4, group_size=None, method="greedy")
    x = RNG.standard_normal((2, 3, 64))
    y = L.lut_gemm(x, Wq, precision="exact")
    assert y.shape == (2, 3, 48) and y.dtype == np.float32
    _assert_matches(y, x.astype(np.float32), Wq)
    _assert_int8(L.lut_gemm(x, Wq).reshape(6, 48), x.reshape(6, 64).astype(np.float32), Wq)
    big = RNG.standard_normal((L.BATCH_CROSSOVER[4], 64)).astype(np.float32)
    y_auto, y_lut = L.lut_gemm(big, Wq), L.lut_gemm(big, Wq, method="lut", precision="exact")
    np.testing.assert_allclose(y_auto, y_lut, rtol=1e-4, atol=1e-4 * np.abs(y_lut).max())
    assert L.lut_gemm(np.zeros((0, 64), np.float32), Wq).shape == (0, 48)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 150), bits=st.integers(1, 4),
       group=st.sampled_from([8, 16, 24, 64, 128, None]), tokens=st.integers(1, 3),
       method=st.sampled_from(["greedy", "uniform", "alternating"]),
       table=st.sampled_from(["auto", "mu4", "mu8"]), seed=st.integers(0, 2**16))
def test_hypothesis_shapes(rows, cols, bits, group, tokens, method, table, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    Wq = L.quantize_weights(W, bits=bits, group_size=group, method=method, iters=2)
    assert Wq.shape == (rows, cols) and Wq.bits == bits and Wq.group_size == group
    Wd = Wq.dequantize()
    assert Wd.shape == (rows, cols) and np.isfinite(Wd).all()
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    x[:, rng.random(cols) < 0.05] *= 30  # outlier columns stress the int8 scales
    int8 = None
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            _assert_matches(L.lut_gemm(x, Wq, table=table, precision="exact"), x, Wq)
            y8 = L.lut_gemm(x, Wq, method="lut", precision="int8")
        _assert_int8(y8, x, Wq)
        if int8 is None:
            int8 = y8
        assert np.array_equal(y8, int8), name  # bit-identical on every backend


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_uniform_to_bcq_is_exact(bits):
    W = _weights(37, 200, "heavy", seed=bits)
    codes, s, zp = L.uniform_quantize(W, bits=bits, group_size=64)
    assert codes.max() <= 2 ** bits - 1
    g = np.arange(200) // 64
    uniform = (s[:, g] * (codes.astype(np.float32) - zp[:, g])).astype(np.float32)
    Wq = L.quantize_weights(W, bits=bits, group_size=64, method="uniform")
    assert np.array_equal(Wq.dequantize(), uniform)
    # and the round-to-nearest error is what it should be: at most half a step
    assert (np.abs(uniform - W) <= s[:, g] * 0.5 * (1 + 1e-5) + 1e-12).all()
    # the general converter, for codes from elsewhere (e.g. GPTQ/AWQ checkpoints)
    Wu = L.BCQMatrix.from_uniform(codes, s, zp, group_size=64)
    assert np.array_equal(Wu.dequantize(), uniform)
    Wu = L.BCQMatrix.from_uniform(codes, s, zp, group_size=64, bits=4)
    assert Wu.bits == 4 and np.array_equal(Wu.dequantize(), uniform)
    with pytest.raises(TypeError, match="codes"):  # a wrong dtype is a wrong type (docs/errors.md)
        L.BCQMatrix.from_uniform(codes.astype(np.float32), s, zp, group_size=64)


@pytest.mark.parametrize("kind", ["gauss", "heavy"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_alternating_beats_greedy(kind, bits):
    W = _weights(64, 512, kind, seed=7)
    errs = {m: float(np.mean((L.quantize_weights(W, bits=bits, group_size=128, method=m).dequantize() - W) ** 2))
            for m in ("greedy", "alternating")}
    assert errs["alternating"] < 0.97 * errs["greedy"], errs


def _q4_1_like(rows, cols, seed=0):
    """Real-model-like weights: heavy-tailed with outlier columns, then stored the way a Q4_1
    GGUF stores them (per 32 weights, 16 levels from the block's min to its max; float16
    step and min), i.e. what SmolLM2's file gives after dequantization."""
    W = _weights(rows, cols, "heavy", seed=seed).astype(np.float64).reshape(rows, -1, 32)
    lo, hi = W.min(-1, keepdims=True), W.max(-1, keepdims=True)
    d = ((hi - lo) / 15).astype(np.float16).astype(np.float64)
    m = lo.astype(np.float16).astype(np.float64)
    u = np.clip(np.round((W - m) / np.where(d > 0, d, 1)), 0, 15)
    return (d * u + m).reshape(rows, cols).astype(np.float32)


def _real_weights():
    gguf = pytest.importorskip("gguf")
    from exaq_cpu.llama.gguf_loader import default_model_path

    try:
        path = default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    t = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}["blk.5.ffn_down.weight"]
    return np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type)[:96], np.float32)


def _group_errors(W, Wq, gs):
    e = Wq.dequantize().astype(np.float64) - W
    e = np.pad(e, ((0, 0), (0, -W.shape[1] % gs))).reshape(W.shape[0], -1, gs)
    return (e ** 2).sum(-1), np.abs(e).max(-1)


@pytest.mark.parametrize("kind", ["heavy", "q4_1", "real"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_alternating_never_worse_than_uniform(kind, bits):
    """Per group, alternating's squared error <= round-to-nearest's (it refines from the
    uniform fit too and keeps that where it is at least as good), and the outlier guard holds:
    no weight further from its reconstruction than OUTLIER_GUARD x uniform's largest error."""
    if kind == "real":
        W = _real_weights()
    else:
        W = _weights(64, 512, "heavy", seed=bits) if kind == "heavy" else _q4_1_like(64, 512, seed=bits)
    gs = 128
    sse_u, max_u = _group_errors(W, L.quantize_weights(W, bits=bits, group_size=gs, method="uniform"), gs)
    Wa = L.quantize_weights(W, bits=bits, group_size=gs, method="alternating")
    sse_a, max_a = _group_errors(W, Wa, gs)
    assert (sse_a <= sse_u).all(), (sse_a > sse_u).sum()
    assert (max_a <= L.OUTLIER_GUARD * max_u * (1 + 1e-6) + 1e-12).all()
    if bits >= 2:
        assert sse_a.sum() < 0.97 * sse_u.sum()  # and it does improve on rounding overall


def test_more_bits_lower_error():
    W = _weights(32, 256, "heavy")
    errs = [np.mean((L.quantize_weights(W, bits=b, method="alternating").dequantize() - W) ** 2) for b in (1, 2, 3, 4)]
    assert errs == sorted(errs, reverse=True)


def test_padding_excluded_from_fit():
    # 130 columns, groups of 128: the 2-column last group is fitted on its 2 weights only
    W = _weights(20, 130)
    Wq = L.quantize_weights(W, bits=1, group_size=128, method="alternating")
    assert np.abs(Wq.dequantize()[:, 128:] - W[:, 128:]).max() < 1e-5


def test_float64_weights_and_rowwise():
    W = _weights(17, 50).astype(np.float64)
    Wq = L.quantize_weights(W, bits=2, group_size=None)
    assert Wq.group_size is None and Wq.shape == (17, 50)
    x = RNG.standard_normal(50).astype(np.float32)
    _assert_matches(L.lut_gemm(x, Wq, precision="exact"), x, Wq)
    _assert_int8(L.lut_gemm(x, Wq), x, Wq)


def test_nbytes_and_compression():
    Wq = L.quantize_weights(_weights(256, 1024), bits=3, group_size=128, method="greedy")
    assert Wq.nbytes == Wq.planes.nbytes + Wq.alphas.nbytes + Wq.offsets.nbytes
    assert Wq.planes.nbytes == 256 * 1024 * 3 // 8
    assert Wq.nbytes < 256 * 1024 * 4 / 7


def test_save_load_and_pickle(tmp_path):
    Wq = L.quantize_weights(_weights(21, 90), bits=3, group_size=16, method="greedy")
    path = tmp_path / "w.npz"
    Wq.save(path)
    for W2 in (L.BCQMatrix.load(path), pickle.loads(pickle.dumps(Wq))):
        assert (W2.shape, W2.bits, W2.group_size, W2.method) == (Wq.shape, 3, 16, "greedy")
        assert np.array_equal(W2.dequantize(), Wq.dequantize())
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises((ValueError, KeyError)):
        L.BCQMatrix.load(tmp_path / "other.npz")


def test_bad_arguments():
    W = _weights(8, 16)
    Wq = L.quantize_weights(W, bits=2, group_size=8, method="greedy")
    x = np.ones(16, np.float32)
    for kwargs, word in [({"bits": 0}, "bits"), ({"bits": 5}, "bits"),
                         ({"group_size": 12}, "group_size"), ({"group_size": 0}, "group_size"),
                         ({"method": "kmeans"}, "method"), ({"iters": -1}, "iters")]:
        with pytest.raises(ValueError, match=word):
            L.quantize_weights(W, **kwargs)
    # a wrong type or dtype is a TypeError (docs/errors.md)
    with pytest.raises(TypeError, match="bits"):
        L.quantize_weights(W, bits=2.5)
    with pytest.raises(TypeError, match="W"):
        L.quantize_weights(W.astype(np.int32))
    with pytest.raises(ValueError, match="W"):
        L.quantize_weights(W[0])
    with pytest.raises(ValueError, match="W"):
        L.quantize_weights(np.full((2, 8), np.nan))
    with pytest.raises(ValueError, match="x"):
        L.lut_gemm(np.ones(15, np.float32), Wq)
    with pytest.raises(TypeError, match="x"):
        L.lut_gemm(np.ones(16, np.int64), Wq)
    with pytest.raises(ValueError, match="x"):
        L.lut_gemm(np.float32(1.0), Wq)
    with pytest.raises(TypeError, match="Wq"):
        L.lut_gemm(x, W)
    with pytest.raises(ValueError, match="out"):
        L.lut_gemm(x, Wq, out=np.empty(7, np.float32))
    with pytest.raises(TypeError, match="out"):
        L.lut_gemm(x, Wq, out=np.empty(8, np.float64))
    with pytest.raises(ValueError, match="threads"):
        L.lut_gemm(x, Wq, threads=0)
    with pytest.raises(ValueError, match="method"):
        L.lut_gemm(x, Wq, method="magic")
    with pytest.raises(ValueError, match="table"):
        L.lut_gemm(x, Wq, table="mu16")
    with pytest.raises(ValueError, match="precision"):
        L.lut_gemm(x, Wq, precision="int4")
    with pytest.raises(ValueError, match="exact"):
        L.lut_gemm(x, Wq, table="mu4", precision="int8")  # a float-table design with int8 tables
    # a float-table design named alone means the float tables
    assert np.array_equal(L.lut_gemm(x, Wq, table="mu8"), L.lut_gemm(x, Wq, table="mu8", precision="exact"))
    with pytest.raises(ValueError):
        L.BCQMatrix(Wq.planes[:-1], Wq.alphas, Wq.offsets, Wq.shape, 2, 8)


def test_preferred_table_per_backend(backend):
    assert L.preferred_table() == {"scalar": "mu8"}.get(backend, "mu4")


@pytest.mark.parametrize("shape", [(0, 16), (5, 0), (0, 0)])
@pytest.mark.parametrize("method", ["greedy", "alternating", "uniform"])
def test_empty_shapes(shape, method):
    Wq = L.quantize_weights(np.zeros(shape, np.float32), bits=2, method=method)
    assert Wq.dequantize().shape == shape
    y = L.lut_gemm(np.ones((2, shape[1]), np.float32), Wq)
    assert y.shape == (2, shape[0]) and not y.any()


def test_packed_int8_cached_and_rebuilt():
    Wq = L.quantize_weights(_weights(70, 96), bits=3, group_size=32, method="greedy")
    codes, alphas, offsets = Wq.packed_int8()
    assert Wq.packed_int8()[0] is codes  # built once
    tiles, groups = 2, 3  # 70 rows -> 2 tiles of 64; 96 columns -> 3 groups of 32
    assert codes.size == tiles * groups * 3 * (32 // 8) * 64
    assert alphas.size == tiles * groups * 3 * 64 and offsets.size == tiles * groups * 64
    x = RNG.standard_normal(96).astype(np.float32)
    y = L.lut_gemm(x, Wq)
    W2 = pickle.loads(pickle.dumps(Wq))  # the planes travel; the int8 form is rebuilt
    assert np.array_equal(L.lut_gemm(x, W2), y)


def test_old_spellings_warn_and_agree():
    """lutgemm.quantize (now quantize_weights) and positional out/threads still work, with a warning."""
    W = RNG.standard_normal((32, 128)).astype(np.float32)
    with pytest.warns(DeprecationWarning, match="quantize_weights"):
        old = L.quantize(W, bits=2, group_size=64, method="greedy")
    new = L.quantize_weights(W, bits=2, group_size=64, method="greedy")
    assert np.array_equal(old.dequantize(), new.dequantize())
    x = RNG.standard_normal(128).astype(np.float32)
    ref = L.lut_gemm(x, new, threads=1)
    out = np.empty(32, np.float32)
    with pytest.warns(DeprecationWarning, match="by keyword"):
        got = L.lut_gemm(x, new, out, 1)
    assert got is out and np.array_equal(out, ref)
    with pytest.raises(TypeError, match="2 positional"):
        L.lut_gemm(x, new, out, 1, "lut")
    with pytest.raises(TypeError, match="both by position and by keyword"), pytest.warns(DeprecationWarning):
        L.lut_gemm(x, new, out, out=out)
