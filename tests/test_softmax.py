"""EXAQ and exact softmax against the float64 oracle, on every backend."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exaq_cpu
from oracle import exact_softmax, near_tie, reference

LENGTHS = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 255, 300]
CLIPS = ["gauss", "row", None, "laplace", -3.5]
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scores(rows, n, seed, sigma=3.0, mask_rate=0.0, offset=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * sigma + offset).astype(np.float32)
    if mask_rate:
        x[rng.random((rows, n)) < mask_rate] = -np.inf
    return x


def check_against_oracle(x, bits, clip, floor):
    got = exaq_cpu.quantize(x, bits, clip=clip, floor=floor)
    probs = exaq_cpu.softmax(x, bits, clip=clip, floor=floor)
    ref = reference(x, bits, clip, floor)
    use = ref["use"]
    tie = near_tie(ref["v"]) & use
    mismatch = (got.codes != ref["codes"]) & use & ~tie
    assert not mismatch.any(), f"codes differ off ties at {np.argwhere(mismatch)[:5]}"
    off_by = np.abs(got.codes.astype(int) - ref["codes"])[use]
    assert off_by.max(initial=0) <= 1
    # probabilities: exactly 0 where masked, NaN for invalid rows, oracle elsewhere
    assert np.all(probs[~use & ~ref["invalid"][:, None]] == 0)
    assert np.all(np.isnan(probs[ref["invalid"]]))
    clean = ref["live"] & ~np.any(tie, axis=1)
    np.testing.assert_allclose(probs[clean], ref["probs"][clean], rtol=2e-5, atol=1e-37)
    sums = probs[ref["live"]].sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    # the packed description is the float output, bit for bit
    table_out = np.take_along_axis(got.table, got.codes.astype(np.intp), axis=-1)
    live_use = use & ref["live"][:, None]
    assert np.array_equal(table_out[live_use], probs[live_use])
    return got, probs


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lengths_around_vector_widths(backend, n, bits):
    x = scores(3, n, seed=n * 7 + bits, mask_rate=0.1)
    for clip in ["gauss", "row", None, -4.0]:
        for floor in ["exp", "zero"]:
            check_against_oracle(x, bits, clip, floor)


@HYP
@given(rows=st.integers(1, 5), n=st.sampled_from(LENGTHS[1:] + [1000]),
       bits=st.sampled_from([2, 3, 4]), clip=st.sampled_from(CLIPS),
       floor=st.sampled_from(["exp", "zero"]), sigma=st.floats(0.01, 20),
       offset=st.floats(-1e3, 1e3), mask_rate=st.sampled_from([0.0, 0.05, 0.5, 0.95]),
       seed=st.integers(0, 2**31))
def test_property_against_oracle(rows, n, bits, clip, floor, sigma, offset, mask_rate, seed):
    if clip == "laplace" and bits == 3:
        clip = "gauss"
    x = scores(rows, n, seed, sigma, mask_rate, offset)
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            check_against_oracle(x, bits, clip, floor)


@HYP
@given(rows=st.integers(1, 4), n=st.sampled_from(LENGTHS[1:] + [2048]),
       bits=st.sampled_from([2, 3, 4]), clip=st.sampled_from(CLIPS),
       mask_rate=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2**31),
       misalign=st.integers(0, 3))
def test_simd_backends_match_scalar_bit_for_bit(rows, n, bits, clip, mask_rate, seed, misalign):
    if clip == "laplace" and bits == 3:  # no published 3-bit Laplace law
        clip = None
    base = scores(rows, n + misalign, seed, 4.0, mask_rate)
    x = base[:, misalign:]  # unaligned rows (copied to contiguous by the API)
    buf = np.empty(rows * n + misalign, np.float32)[misalign:].reshape(rows, n)
    buf[...] = x  # unaligned but contiguous: passed straight to the kernels
    results = {}
    for name in exaq_cpu.backends():
        q = exaq_cpu.quantize(buf, bits, clip=clip, backend=name)
        results[name] = (q.codes, q.lo, q.table, exaq_cpu.softmax(buf, bits, clip=clip, backend=name),
                         exaq_cpu.softmax(buf, None, backend=name))
    ref = results["scalar"]
    for name, got in results.items():
        for a, b in zip(got[:4], ref[:4]):
            assert np.array_equal(a, b, equal_nan=True), name
        np.testing.assert_allclose(got[4], ref[4], rtol=1e-6, atol=1e-30)


def test_masked_entries_and_rows(backend):
    x = scores(5, 40, 1)
    x[0, ::3] = -np.inf
    x[1, :] = -np.inf
    x[2, 5] = np.nan
    x[3, 7] = np.inf
    for bits in [None, 2, 3, 4]:
        p = exaq_cpu.softmax(x, bits)
        assert np.all(p[0, ::3] == 0)
        assert np.all(p[1] == 0)
        assert np.all(np.isnan(p[2])) and np.all(np.isnan(p[3]))
        assert abs(float(p[0].sum(dtype=np.float64)) - 1) < 1e-5
        assert abs(float(p[4].sum(dtype=np.float64)) - 1) < 1e-5


def test_invalid_rows_left_out_of_pooled_statistics(backend):
    x = scores(4, 50, 2)
    bad = x.copy()
    bad[1, 3] = np.nan
    bad[2, 9] = np.inf
    keep = [0, 3]
    for clip in ["gauss", None, "laplace"]:
        full = exaq_cpu.softmax(bad, 2, clip=clip)
        alone = exaq_cpu.softmax(x[keep], 2, clip=clip)
        assert np.array_equal(full[keep], alone)


def test_shift_invariance(backend):
    """softmax(x + c) = softmax(x) up to float rounding: the statistics are float
    sums of x, and the row shift is folded into the quantizer's bias, so codes
    may differ only where x - max sits on (or within rounding of) a code boundary."""
    rng = np.random.default_rng(3)
    # multiples of 1/64 below 2**10: every x - max and x + c is exact in float32
    x = (np.round(rng.standard_normal((6, 77)) * 3 * 64) / 64).astype(np.float32)
    for bits in [2, 3, 4]:
        for clip in ["gauss", "row", None, -2.5]:
            a = exaq_cpu.quantize(x, bits, clip=clip)
            b = exaq_cpu.quantize(x + np.float32(37.0), bits, clip=clip)
            np.testing.assert_allclose(a.lo, b.lo, rtol=1e-6)
            v = reference(x, bits, clip)["v"]
            assert np.all((a.codes == b.codes) | near_tie(v, 1e-4))
            same = np.all(a.codes == b.codes, axis=1)
            pa, pb = exaq_cpu.softmax(x, bits, clip=clip), exaq_cpu.softmax(x + np.float32(37.0), bits, clip=clip)
            np.testing.assert_allclose(pa[same], pb[same], rtol=1e-5)


@pytest.mark.parametrize("bits", [None, 2, 3, 4])
def test_monotone_in_the_score(backend, bits):
    x = scores(8, 129, 4, sigma=5.0, mask_rate=0.1)
    p = exaq_cpu.softmax(x, bits)
    order = np.argsort(np.where(np.isneginf(x), -np.inf, x), axis=1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=1)
    assert np.all(np.diff(sorted_p, axis=1) >= 0)


def test_exact_softmax_against_float64(backend):
    for n in LENGTHS[1:] + [2048]:
        x = scores(4, n, n, sigma=6.0, mask_rate=0.2)
        p = exaq_cpu.softmax(x, None).astype(np.float64)
        ref = exact_softmax(x)
        # float32 x - max alone carries a relative error of |t| * 2**-24 into exp
        t = np.abs(x.astype(np.float64) - np.max(x, axis=1, keepdims=True))
        t[~np.isfinite(t)] = 0
        tol = ref * (2e-6 + t * 2.0**-23) + 2e-38
        assert np.all(np.abs(p - ref) <= tol)


def test_special_values(backend):
    tiny = np.float32(1e-40)  # denormal
    x = np.array([[tiny, 0.0, -tiny, 2 * tiny],
                  [3e38, -3e38, 1.0, -np.inf],
                  [-3e38, -3e38, -3e38, -3e38],
                  [1e30, 1e30 - 1e24, -1e30, 0.0]], dtype=np.float32)
    for bits in [None, 2, 3, 4]:
        for clip in ["gauss", "row", None]:
            if bits is None and clip != "gauss":
                continue  # the exact softmax takes no clip
            p = exaq_cpu.softmax(x, bits, clip=clip)
            assert np.all(np.isfinite(p))
            np.testing.assert_allclose(p.sum(axis=1, dtype=np.float64), 1.0, atol=1e-5)
            assert p[1, 3] == 0
    # constant rows are uniform
    p = exaq_cpu.softmax(x[2:3], 2)
    assert np.all(p == np.float32(0.25))
    check_against_oracle(x, 2, "row", "exp")


def test_empty_inputs(backend):
    for shape in [(0,), (0, 5), (5, 0), (2, 0, 3)]:
        x = np.zeros(shape, np.float32)
        for bits in [None, 2]:
            p = exaq_cpu.softmax(x, bits)
            assert p.shape == shape and p.dtype == np.float32
    q = exaq_cpu.quantize(np.zeros((3, 0), np.float32), 2)
    assert q.codes.shape == (3, 0)
    assert exaq_cpu.softmax(np.zeros((1, 1), np.float32), 2)[0, 0] == 1


def test_layouts_axes_and_dtypes(backend):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 20, 33)) * 3).astype(np.float32)
    for bits in [None, 2]:
        for clip in (["gauss", "row"] if bits else ["gauss"]):
            ref = exaq_cpu.softmax(np.ascontiguousarray(np.moveaxis(x, 1, -1)), bits, clip=clip)
            got = exaq_cpu.softmax(x, bits, axis=1, clip=clip)
            assert np.array_equal(np.moveaxis(got, 1, -1), ref)
            got = exaq_cpu.softmax(np.asfortranarray(x), bits, axis=-2, clip=clip)
            assert np.array_equal(np.moveaxis(got, 1, -1), ref)
            # negative strides on a batch axis keep each row's order: identical
            flipped = x[::-1, :, ::-1]
            got = exaq_cpu.softmax(flipped, bits, axis=1, clip=clip)
            assert np.array_equal(got[::-1, :, ::-1], np.moveaxis(ref, -1, 1))
            # reversing the softmax axis reorders the sums: equal up to rounding
            got = exaq_cpu.softmax(x[:, ::-1, :], bits, axis=1, clip=clip)
            np.testing.assert_allclose(got[:, ::-1, :], np.moveaxis(ref, -1, 1), rtol=1e-5)
        strided = x[:, ::2, ::3]
        assert np.array_equal(exaq_cpu.softmax(strided, bits),
                              exaq_cpu.softmax(np.ascontiguousarray(strided), bits))
        # a float32 buffer off the 4-byte grid (np.frombuffer at an odd offset),
        # as input and as out=: the kernels get an aligned copy
        raw = np.zeros(x.nbytes + 1, np.uint8)
        unaligned = np.frombuffer(raw.data, np.float32, x.size, offset=1).reshape(x.shape)
        unaligned[...] = x
        assert not unaligned.flags.aligned
        assert np.array_equal(exaq_cpu.softmax(unaligned, bits), exaq_cpu.softmax(x, bits))
        exaq_cpu.softmax(x, bits, out=unaligned)
        assert np.array_equal(unaligned, exaq_cpu.softmax(x, bits))
        if bits:
            packed = exaq_cpu.softmax(np.frombuffer(raw.data, np.float32, x.size, offset=1).reshape(x.shape),
                                      bits, output="packed")
            assert np.array_equal(packed.to_float(), exaq_cpu.softmax(unaligned, bits))
        readonly = x.copy()
        readonly.flags.writeable = False
        assert np.array_equal(exaq_cpu.softmax(readonly, bits), exaq_cpu.softmax(x, bits))
        for dt in [np.float16, np.float64]:
            got = exaq_cpu.softmax(x.astype(dt), bits)
            assert got.dtype == np.float32
            assert np.array_equal(got, exaq_cpu.softmax(x.astype(dt).astype(np.float32), bits))
        for dt in [np.float16, np.float64]:
            got = exaq_cpu.softmax(x, bits, dtype=dt)
            assert got.dtype == dt
            np.testing.assert_array_equal(got, exaq_cpu.softmax(x, bits).astype(dt))


def test_out_and_in_place(backend):
    x = scores(7, 45, 6, mask_rate=0.1)
    for bits in [None, 2, 4]:
        expected = exaq_cpu.softmax(x, bits)
        out = np.empty_like(x)
        assert exaq_cpu.softmax(x, bits, out=out) is out
        assert np.array_equal(out, expected)
        inplace = x.copy()
        assert exaq_cpu.softmax(inplace, bits, out=inplace) is inplace
        assert np.array_equal(inplace, expected)
        fout = np.empty(x.shape, np.float32, order="F")
        exaq_cpu.softmax(x, bits, out=fout)
        assert np.array_equal(fout, expected)
        # out overlapping x with an offset: computed aside, never garbage
        buf = np.concatenate([x.ravel(), np.zeros(45, np.float32)])
        src = buf[:x.size].reshape(x.shape)
        dst = buf[45:45 + x.size].reshape(x.shape)
        exaq_cpu.softmax(src, bits, out=dst)
        assert np.array_equal(dst, expected)


def test_errors_name_the_argument():
    x = np.zeros((2, 3), np.float32)
    for bad in [np.zeros(3, np.complex64), np.array(["a"], object), np.array(["1", "2"])]:
        with pytest.raises(TypeError, match="x must"):
            exaq_cpu.softmax(bad)
    for bits in [1, 5, 8]:
        with pytest.raises(ValueError, match="bits"):
            exaq_cpu.softmax(x, bits)
    for bits in [2.0, True, "2"]:  # a wrong type is a TypeError (docs/errors.md)
        with pytest.raises(TypeError, match="bits"):
            exaq_cpu.softmax(x, bits)
    with pytest.raises(ValueError, match="axis"):
        exaq_cpu.softmax(x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        exaq_cpu.softmax(x, axis=1.0)
    for clip in [0.0, 1.0, float("nan"), -float("inf")]:
        with pytest.raises(ValueError, match="clip"):
            exaq_cpu.softmax(x, 2, clip=clip)
    with pytest.raises(ValueError, match="clip"):
        exaq_cpu.softmax(x, 2, clip="bogus")
    with pytest.raises(ValueError, match="laplace"):
        exaq_cpu.softmax(x, 3, clip="laplace")
    with pytest.raises(TypeError, match="clip"):
        exaq_cpu.softmax(x, 2, clip=["a"])
    with pytest.raises(ValueError, match="floor"):
        exaq_cpu.softmax(x, 2, floor="one")
    with pytest.raises(ValueError, match="out"):
        exaq_cpu.softmax(x, out=np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="out"):
        exaq_cpu.softmax(x, out=[0.0] * 6)
    ro = np.empty((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        exaq_cpu.softmax(x, out=ro)
    with pytest.raises(ValueError, match="dtype"):
        exaq_cpu.softmax(x, dtype=np.int32)
    with pytest.raises(ValueError, match="x must have"):  # a 0-d input is 1 (scipy), its codes are not
        exaq_cpu.quantize(np.float32(1.0))


def test_backend_selection():
    names = exaq_cpu.backends()
    assert names[0] == "scalar" and exaq_cpu.backend() in names
    assert set(names) <= set(exaq_cpu.all_backends())
    with pytest.raises(ValueError, match="backend"):
        exaq_cpu.set_backend("bogus")
    unsupported = [b for b in exaq_cpu.all_backends() if b not in names]
    for b in unsupported:
        with pytest.raises(ValueError):
            exaq_cpu.set_backend(b)


@pytest.mark.parametrize("forced", exaq_cpu.all_backends())
def test_environment_override(forced):
    code = ("import warnings, exaq_cpu\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "import exaq_cpu, numpy as np\n"
            "p = exaq_cpu.softmax(np.arange(40, dtype=np.float32).reshape(2, 20), 2)\n"
            "print(exaq_cpu.backend(), float(p.sum()))\n")
    env = {**__import__("os").environ, "EXAQ_CPU_BACKEND": forced}
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    active, total = run.stdout.split()
    assert abs(float(total) - 2.0) < 1e-4
    if forced in exaq_cpu.backends():
        assert active == forced
    else:
        assert "EXAQ_CPU_BACKEND" in run.stderr and active in exaq_cpu.backends()


def test_concurrent_calls_from_threads():
    xs = [scores(64, 515, s, mask_rate=0.05) for s in range(8)]
    expected = [exaq_cpu.softmax(x, 2) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda x: exaq_cpu.softmax(x, 2), xs))
            assert all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_score_stats_against_numpy(backend):
    x = scores(6, 101, 8, sigma=2.5, mask_rate=0.2, offset=4)
    s = exaq_cpu.score_stats(x)
    t = x.astype(np.float64) - np.max(x, axis=1, keepdims=True)
    pool = t[np.isfinite(x)]
    assert s["count"] == pool.size
    np.testing.assert_allclose(s["sigma"], np.std(pool, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(s["min"], pool.min(), rtol=1e-6)
    np.testing.assert_allclose(s["mean"], pool.mean(), rtol=1e-6)
    np.testing.assert_allclose(s["mean_abs_dev"], np.mean(np.abs(pool - pool.mean())), rtol=1e-6)


@given(rows=st.integers(1, 40), n=st.sampled_from([1, 5, 16, 17, 31, 32, 33, 64, 100, 257]),
       bits=st.sampled_from([2, 3, 4]), clip=st.sampled_from(["gauss", "row", -3.5, None]),
       style=st.sampled_from(["causal", "padding", "causal+holes"]), seed=st.integers(0, 2**31))
@HYP
def test_rows_ending_in_masked_runs_against_oracle(rows, n, bits, clip, style, seed):
    """Causal and padding masks end rows in runs of -inf, which pass 2 skips: the
    result must still be the oracle's, on every backend, float and packed output."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
    keep = rng.integers(1, n + 1, size=rows) if style != "causal" else np.minimum(np.arange(rows) + 1 + n // 2, n)
    x[np.arange(n)[None, :] >= keep[:, None]] = -np.inf
    if style == "causal+holes":
        x[rng.random((rows, n)) < 0.1] = -np.inf
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            _, probs = check_against_oracle(x, bits, clip, "exp")
            packed = exaq_cpu.softmax(x, bits, clip=clip, output="packed")
            assert packed.to_float().tobytes() == probs.tobytes()
            # the packed fields as the format defines them, from the byte codes
            masked = np.isneginf(x)
            codes = exaq_cpu.quantize(x, bits, clip=clip).codes
            assert np.array_equal(packed.codes, exaq_cpu.pack(np.where(masked, 0, codes), bits))
            live_end = np.where((~masked).any(axis=1), n - np.argmax(~masked[:, ::-1], axis=1), 0)
            assert np.array_equal(packed.lengths, live_end)
            interior = (masked & (np.arange(n)[None, :] < live_end[:, None])).any()
            if interior:
                assert np.array_equal(packed.mask, np.packbits(masked, axis=-1, bitorder="little"))
            else:
                assert packed.mask is None


@pytest.mark.parametrize("n", [33, 100, 257, 1001])
@pytest.mark.parametrize("clip", ["gauss", -3.5])
def test_masked_tails_at_every_block_edge_give_the_format_exactly(n, clip):
    """Rows whose masked tails start at and around every 8/32-entry edge (pass 2
    does not read the tail; the packed bytes, bitmap padding and lengths must
    still be what the format defines), with one interior -inf so the bitmap
    is handed out, and the float output zero on the tail."""
    ends = sorted({e for e in (1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 95, 96, 97, n - 33, n - 32, n - 1, n) if 0 < e <= n})
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((len(ends), n)) * 3).astype(np.float32)
    for r, e in enumerate(ends):
        x[r, e:] = -np.inf
    x[0, 0] = -np.inf if ends[0] > 1 else x[0, 0]
    x[-1, n // 2] = -np.inf  # an interior hole: the bitmap is handed out
    masked = np.isneginf(x)
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            for bits in (2, 3, 4):
                packed = exaq_cpu.softmax(x, bits, clip=clip, output="packed")
                codes = exaq_cpu.quantize(x, bits, clip=clip).codes
                assert np.array_equal(packed.codes, exaq_cpu.pack(np.where(masked, 0, codes), bits)), (name, bits)
                assert np.array_equal(packed.mask, np.packbits(masked, axis=-1, bitorder="little")), (name, bits)
                assert packed.lengths.tolist() == [n - int(np.argmax(~m[::-1])) for m in masked]
                probs = exaq_cpu.softmax(x, bits, clip=clip)
                assert not probs[masked].any() and np.signbit(probs[masked]).sum() == 0
                assert packed.to_float().tobytes() == probs.tobytes()
            exact = exaq_cpu.softmax(x, None)  # its tail is skipped too
            assert not exact[masked].any() and np.signbit(exact[masked]).sum() == 0
            np.testing.assert_allclose(exact, exact_softmax(x.astype(np.float64)), rtol=2e-6, atol=1e-12)


# --- exact ties: round half to even (docs/semantics.md, section 2) ---------------------------


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_exact_ties_round_half_to_even(backend, bits):
    """Half-integer shifted scores with the static clip -(2^b-1) (scale exactly 1) sit exactly
    halfway between two codes; numpy.rint picks the even one. floor(v + 0.5) would not."""
    levels = (1 << bits) - 1
    rng = np.random.default_rng(bits)
    for n in (*range(1, 70), 127, 128, 129, 255, 256, 257, 1000):
        k = rng.integers(0, 2 * levels + 1, size=(3, n))
        k[:, n // 2] = 0  # the row maximum: t = 0
        shift = np.array([[0.0], [5.0], [-40.0]])
        x = (shift - 0.5 * k).astype(np.float32)
        expected = np.rint(levels - 0.5 * k).astype(np.uint8)
        q = exaq_cpu.quantize(x, bits=bits, clip=-float(levels))
        assert np.array_equal(q.codes, expected), (backend, n)
        packed = exaq_cpu.softmax(x, bits=bits, clip=-float(levels), output="packed")
        assert np.array_equal(packed.unpacked_codes(), expected), (backend, n)
        assert np.array_equal(exaq_cpu.softmax(x, bits=bits, clip=-float(levels)),
                              np.take_along_axis(q.table, expected.astype(np.intp), -1))


@pytest.mark.skipif(sys.platform != "linux", reason="address-space cap via RLIMIT_AS, read from /proc")
def test_long_rows_reserve_only_the_scratch_they_use():
    """Pass 2 keeps a group's byte codes in scratch: one long row at 3/4 bits
    must not reserve eight rows' worth (it did: MemoryError under a cap where
    the same call at 2 bits ran)."""
    code = (
        "import resource, numpy as np, exaq_cpu\n"
        "n = 1 << 24\n"
        "x = np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)\n"
        "out = np.empty_like(x)\n"
        "exaq_cpu.softmax(x[:, :64], 4, threads=1)  # everything imported and warmed\n"
        "size = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 48 * 2**20, resource.RLIM_INFINITY))\n"
        "for bits in (2, 3, 4):\n"
        "    exaq_cpu.softmax(x, bits, clip=-4.0, out=out, threads=1)\n"
        "    assert abs(float(out.sum(dtype=np.float64)) - 1) < 1e-3\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_scipy_conventions():
    """What scipy.special.softmax users rely on: integer/bool input computed as
    floats, a 0-d input, axis=None (one softmax over every entry), masked arrays."""
    scipy_special = pytest.importorskip("scipy.special")
    ints = np.arange(12).reshape(3, 4)
    np.testing.assert_allclose(exaq_cpu.softmax(ints, None), scipy_special.softmax(ints, axis=-1), rtol=1e-6)
    assert np.array_equal(exaq_cpu.softmax(ints > 5, 2), exaq_cpu.softmax((ints > 5).astype(np.float32), 2))
    assert exaq_cpu.softmax(np.float64(3.0), None) == scipy_special.softmax(np.float64(3.0)) == 1.0
    assert exaq_cpu.softmax(np.float32(3.0), None).shape == ()
    x = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
    whole = exaq_cpu.softmax(x, None, axis=None)
    assert whole.shape == x.shape
    np.testing.assert_allclose(whole, scipy_special.softmax(x.astype(np.float64), axis=None), rtol=1e-5)
    assert np.array_equal(exaq_cpu.softmax(x, 2, axis=None), exaq_cpu.softmax(x.reshape(-1), 2).reshape(x.shape))
    masked = np.ma.masked_array(x, mask=x > 0.5)
    expected = exaq_cpu.softmax(np.where(x > 0.5, -np.inf, x), 2)
    assert np.array_equal(exaq_cpu.softmax(masked, 2), expected)
    assert np.all(exaq_cpu.softmax(masked, 2)[x > 0.5] == 0)


def test_result_dtype_rule():
    """float32 results unless dtype= or an out= array of another float dtype says otherwise."""
    x = np.random.default_rng(6).standard_normal((2, 9))  # float64
    assert exaq_cpu.softmax(x, 2).dtype == np.float32
    assert exaq_cpu.softmax(x, 2, dtype=np.float64).dtype == np.float64
    out = np.empty((2, 9))
    assert exaq_cpu.softmax(x, 2, out=out) is out
    np.testing.assert_array_equal(out, exaq_cpu.softmax(x, 2).astype(np.float64))
    with pytest.raises(TypeError, match="dtype"):
        exaq_cpu.softmax(x, 2, out=np.empty((2, 9), np.float16), dtype=np.float32)
    for axis in (None, -1):  # the same rule on every path: an out of no float dtype is refused
        with pytest.raises(ValueError, match="dtype"):
            exaq_cpu.softmax(x, 2, axis=axis, out=np.empty((2, 9), np.int32))
    whole = np.empty((2, 9))
    assert exaq_cpu.softmax(x, None, axis=None, out=whole) is whole and whole.dtype == np.float64
    np.testing.assert_array_equal(whole, exaq_cpu.softmax(x, None, axis=None, dtype=np.float64))


def test_clip_vocabulary():
    x = np.random.default_rng(7).standard_normal((4, 30)).astype(np.float32)
    assert np.array_equal(exaq_cpu.softmax(x, 2, clip="naive"), exaq_cpu.softmax(x, 2, clip=None))
    with pytest.raises(ValueError, match="valid: gauss, laplace, row, naive"):
        exaq_cpu.softmax(x, 2, clip="gaus")
    for clip in ("row", None, -3.0):
        with pytest.raises(ValueError, match="exact softmax"):
            exaq_cpu.softmax(x, None, clip=clip)
        with pytest.raises(ValueError, match="exact softmax"):
            exaq_cpu.softmax_into(x, np.empty_like(x), None, clip=clip)


def test_main_job_reports_every_variant(tmp_path, capsys):
    """python -m exaq_cpu: one row per variant with error and speed, no negative KL, a PNG."""
    from exaq_cpu.__main__ import main

    png = tmp_path / "summary.png"
    main(["--repeat", "1", "--png", str(png)])
    text = capsys.readouterr().out
    table = [line for line in text.splitlines() if line.startswith(("exact float", "EXAQ", "numpy", "scipy"))]
    assert len(table) >= 8
    for line in table:
        kl = float(line[24:].split()[1])
        assert kl >= 0.0, line
    assert png.stat().st_size > 1000 or "matplotlib not installed" in text
