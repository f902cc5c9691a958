"""Packed codes (docs/packed.md): pack/unpack, LUTsum, softmax(output="packed")."""
import io
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exaq_cpu
from exaq_cpu.packed import exponent_table

LENGTHS = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 39, 40, 41, 63, 64, 65, 127, 128, 129, 255,
           256, 257, 300]
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def naive_pack(codes, bits):
    """The documented format, bit by bit: code j at bit j*bits of the row's little-endian stream."""
    codes = np.asarray(codes, np.int64)
    n = codes.shape[-1]
    stream = ((codes[..., :, None] >> np.arange(bits)) & 1).reshape(codes.shape[:-1] + (n * bits,))
    nbytes = (n * bits + 7) // 8
    pad = np.zeros(codes.shape[:-1] + (8 * nbytes - n * bits,), np.int64)
    return np.packbits(np.concatenate([stream, pad], axis=-1).astype(np.uint8), axis=-1,
                       bitorder="little")


def scores(rows, n, seed, sigma=3.0, mask_rate=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * sigma).astype(np.float32)
    if mask_rate:
        x[rng.random((rows, n)) < mask_rate] = -np.inf
    return x


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pack_format_and_round_trip(backend, bits):
    rng = np.random.default_rng(bits)
    for n in LENGTHS:
        codes = rng.integers(0, 1 << bits, size=(3, n), dtype=np.uint8)
        packed = exaq_cpu.pack(codes, bits)
        assert packed.dtype == np.uint8 and packed.shape == (3, (n * bits + 7) // 8)
        assert np.array_equal(packed, naive_pack(codes, bits)), n
        assert np.array_equal(exaq_cpu.unpack(packed, bits, n), codes)
    # 3 bits: eight codes in three bytes, codes 2 and 5 straddle byte boundaries
    assert exaq_cpu.pack(np.array([0, 0, 7, 0, 0, 0, 0, 0]), 3).tolist() == [0xC0, 0x01, 0x00]
    assert exaq_cpu.pack(np.array([0, 0, 0, 0, 0, 7, 0, 0]), 3).tolist() == [0x00, 0x80, 0x03]
    assert exaq_cpu.pack(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert exaq_cpu.pack(np.array([0xA, 0x5]), 4).tolist() == [0x5A]


def test_pack_axes_and_defaults():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, size=(5, 12, 3)).astype(np.int64)
    packed = exaq_cpu.pack(codes, 2, axis=1)
    assert packed.shape == (5, 3, 3)
    assert np.array_equal(exaq_cpu.unpack(packed, 2, 12, axis=1), codes)
    assert exaq_cpu.unpack(packed, 2, axis=1).shape == (5, 12, 3)  # n from the bytes


def test_pack_errors():
    with pytest.raises(ValueError):
        exaq_cpu.pack(np.array([0, 4]), 2)
    with pytest.raises(ValueError):
        exaq_cpu.pack(np.array([-1, 0]), 3)
    with pytest.raises(ValueError):
        exaq_cpu.pack(np.array([0, 1]), 5)
    with pytest.raises(TypeError):
        exaq_cpu.pack(np.array([0.5]), 2)
    with pytest.raises(ValueError):
        exaq_cpu.unpack(np.zeros(3, np.uint8), 2, 13)  # short buffer: 13 codes need 4 bytes
    with pytest.raises(TypeError):  # a wrong dtype is a wrong type, as in pack (docs/errors.md)
        exaq_cpu.unpack(np.zeros(3, np.int16), 2)
    with pytest.raises(ValueError):
        exaq_cpu.unpack(np.zeros(3, np.uint8), 1)
    with pytest.raises(ValueError):
        exaq_cpu.unpack(np.zeros(3, np.uint8), 2, -1)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lutsum_against_float64(backend, bits):
    rng = np.random.default_rng(10 + bits)
    lut = exponent_table(-5.5, bits)
    for n in LENGTHS + [2048, 4111]:
        codes = rng.integers(0, 1 << bits, size=(3, n), dtype=np.uint8)
        packed = exaq_cpu.pack(codes, bits)
        exact = lut.astype(np.float64)[codes].sum(axis=1)
        tol = 6e-8 * (n + 16) * exact + 1e-30
        for method in ["auto", "table"]:
            got = exaq_cpu.lutsum(packed, bits, lut, n, method=method)
            assert np.all(np.abs(got - exact) <= tol), (n, method)
        lengths = np.array([n, n // 2, 0])
        got = exaq_cpu.lutsum(packed, bits, lut, n, lengths=lengths)
        ref = [lut.astype(np.float64)[codes[r, :lengths[r]]].sum() for r in range(3)]
        assert np.allclose(got, ref, rtol=6e-8 * (n + 16), atol=1e-30)
    # one table per row
    codes = rng.integers(0, 1 << bits, size=(4, 100), dtype=np.uint8)
    luts = exponent_table(np.array([-1.0, -2.0, -3.0, -4.0]), bits)
    got = exaq_cpu.lutsum(exaq_cpu.pack(codes, bits), bits, luts, 100)
    ref = np.take_along_axis(luts.astype(np.float64), codes.astype(np.intp), 1).sum(1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    with pytest.raises(ValueError):
        exaq_cpu.lutsum(exaq_cpu.pack(codes, bits), bits, luts, 100, method="table")
    with pytest.raises(ValueError):
        exaq_cpu.lutsum(exaq_cpu.pack(codes, bits), bits, lut[:-1], 100)


def test_lutsum_is_the_row_sum_of_exaq():
    """LUTsum over a packed softmax row with the row's LUTexp gives the normalizer."""
    x = scores(6, 1000, 3)
    ps = exaq_cpu.softmax(x, 2, clip=-6.0, output="packed")
    lut = exponent_table(-6.0, 2)
    s = exaq_cpu.lutsum(ps.codes, 2, lut, 1000)
    np.testing.assert_allclose(ps.table * s[:, None], np.broadcast_to(lut, (6, 4)), rtol=1e-5)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packed_softmax_equals_float_output(backend, bits):
    for n in LENGTHS:
        x = scores(5, n, n + bits, mask_rate=0.1)
        for clip in ["gauss", "row", -4.0]:
            ps = exaq_cpu.softmax(x, bits, clip=clip, output="packed")
            f = exaq_cpu.softmax(x, bits, clip=clip)
            assert isinstance(ps, exaq_cpu.PackedSoftmax)
            assert ps.to_float().tobytes() == f.tobytes(), (n, clip)
            q = exaq_cpu.quantize(x, bits, clip=clip)
            assert np.array_equal(ps.unpacked_codes(), q.codes)
            assert np.array_equal(ps.table, q.table)


def test_masks_lengths_and_bitmap(backend):
    n = 77
    x = scores(6, n, 4)
    x[0, 50:] = -np.inf        # causal / padding: a prefix, no bitmap needed
    x[1, :] = -np.inf          # fully masked
    x[2, 3] = np.nan           # invalid row: NaN everywhere
    x[3, n - 1] = -np.inf      # last entry only
    prefix = x[:4].copy()
    ps = exaq_cpu.softmax(prefix, 2, output="packed")
    assert ps.mask is None
    assert ps.lengths.tolist() == [50, 0, n, n - 1]
    f = exaq_cpu.softmax(prefix, 2)
    assert np.array_equal(ps.to_float(), f, equal_nan=True)
    assert np.all(ps.to_float()[0, 50:] == 0) and np.all(ps.to_float()[1] == 0)
    assert np.all(np.isnan(ps.to_float()[2]))
    x[4, ::5] = -np.inf        # general mask: a bitmap
    x[4, -3:] = -np.inf
    ps = exaq_cpu.softmax(x, 3, output="packed")
    assert ps.mask is not None and ps.mask.shape == (6, (n + 7) // 8)
    assert ps.lengths[4] == n - 3
    masked = np.unpackbits(ps.mask[4], count=n, bitorder="little").astype(bool)
    assert np.array_equal(masked, x[4] == -np.inf)
    assert np.array_equal(ps.masked()[4], x[4] == -np.inf)
    out = ps.to_float()
    assert np.array_equal(out, exaq_cpu.softmax(x, 3), equal_nan=True)
    assert np.all(out[x == -np.inf][~np.isnan(out[x == -np.inf])] == 0)
    for bits in (2, 3, 4):  # rows without -inf beside one that needs the bitmap: all of it is written
        ps = exaq_cpu.softmax(x, bits, output="packed")
        bitmap = np.unpackbits(ps.mask, axis=1, count=n, bitorder="little").astype(bool)
        valid = np.arange(6) != 2  # row 2 holds NaN
        assert np.array_equal(bitmap[valid], (x == -np.inf)[valid])


def test_axes_shapes_dtypes_and_nbytes(backend):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 40, 3, 5)) * 3).astype(np.float64)
    for axis in [0, 1, -1]:
        ps = exaq_cpu.softmax(x, 2, axis=axis, output="packed")
        assert ps.shape == x.shape and ps.axis == axis % 4
        assert np.array_equal(ps.to_float(), exaq_cpu.softmax(x, 2, axis=axis))
    x = (rng.standard_normal((256, 2048)) * 3).astype(np.float32)
    ps = exaq_cpu.softmax(x, 2, output="packed")
    assert ps.codes.nbytes * 16 == x.nbytes
    assert ps.nbytes == ps.codes.nbytes + ps.table.nbytes + ps.lengths.nbytes
    assert x.nbytes / ps.nbytes > 14
    for shape in [(0, 5), (5, 0), (3, 0, 2)]:
        e = np.zeros(shape, np.float32)
        ps = exaq_cpu.softmax(e, 2, output="packed")
        assert ps.to_float().shape == shape


def test_pickle_and_save_load(tmp_path):
    x = scores(4, 33, 7, mask_rate=0.2)
    for bits in [2, 3, 4]:
        ps = exaq_cpu.softmax(x, bits, output="packed")
        back = pickle.loads(pickle.dumps(ps))
        assert back.to_float().tobytes() == ps.to_float().tobytes()
        path = tmp_path / f"p{bits}.npz"
        ps.save(path)
        loaded = exaq_cpu.PackedSoftmax.load(path)
        assert loaded.to_float().tobytes() == ps.to_float().tobytes()
        assert (loaded.mask is None) == (ps.mask is None)
        buf = io.BytesIO()
        ps.save(buf)
        buf.seek(0)
        assert exaq_cpu.PackedSoftmax.load(buf).bits == bits


@pytest.mark.parametrize("rows", [
    np.zeros((2, 8), np.float64),                      # wrong dtype
    np.zeros((2, 16), np.float32)[:, ::2],             # not contiguous
    np.zeros(8, np.float32),                           # not 2-D
    np.zeros((2, 8), ">f4" if np.little_endian else "<f4"),  # byte-swapped
    np.frombuffer(bytearray(65), np.uint8)[1:].view(np.float32).reshape(2, 8),  # misaligned
])
def test_core_packed_entry_refuses_rows_it_cannot_read(rows):
    """The C entry point takes only what the kernels can read in place (the
    Python layer converts everything else first)."""
    from exaq_cpu import _core
    with pytest.raises(ValueError, match="x must be"):
        _core.softmax_packed(rows, 2, "gauss", -1.66, -1.85, 0.0, "exp", exaq_cpu.PackedSoftmax, rows.shape, 1)
    # the public entry converts the same input and agrees with the float output
    out = exaq_cpu.softmax(rows, 2, output="packed")
    assert np.array_equal(out.to_float(), exaq_cpu.softmax(rows, 2))


def same_packed(a, b):
    return (a.shape == b.shape and a.axis == b.axis and a.bits == b.bits and np.array_equal(a.codes, b.codes)
            and np.array_equal(a.table, b.table, equal_nan=True) and np.array_equal(a.lengths, b.lengths)
            and (a.mask is None) == (b.mask is None) and (a.mask is None or np.array_equal(a.mask, b.mask)))


def _packed_in_place(x, bits, axis, clip, floor):
    from exaq_cpu import _core
    return _core.softmax_common(x, bits, axis, clip, floor, None, "packed", None)


@given(rows=st.integers(0, 5), n=st.sampled_from(LENGTHS), bits=st.sampled_from([2, 3, 4]),
       clip=st.sampled_from(["gauss", "row", "laplace", -4.5, None]), floor=st.sampled_from(["exp", "zero"]),
       mask_rate=st.sampled_from([0.0, 0.3]), lead=st.sampled_from([(), (2,), (1, 3)]), seed=st.integers(0, 99))
@HYP
def test_in_place_path_equals_checking_path(rows, n, bits, clip, floor, mask_rate, lead, seed):
    """softmax(output="packed") reads kernel-ready scores in place (exaq_cpu._core.softmax_common);
    every other call checks and converts.  Both give the same PackedSoftmax, on every backend."""
    from exaq_cpu import _core
    if clip == "laplace" and bits == 3:
        clip = "gauss"
    x = scores(max(rows, 1) * int(np.prod(lead, dtype=np.int64)), n, seed, mask_rate=mask_rate)
    x = np.ascontiguousarray(x.reshape(lead + (max(rows, 1), n))[..., :rows, :])
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            fast = _packed_in_place(x, bits, -1, clip, floor)
            if clip is None:
                assert fast is None  # no law: the checking path
                fast = exaq_cpu.softmax(x, bits, clip=clip, floor=floor, output="packed")
            checked = exaq_cpu.softmax(x, np.int64(bits), clip=clip, floor=floor, output="packed")
            assert same_packed(fast, checked)
            assert fast.to_float().tobytes() == exaq_cpu.softmax(x, bits, clip=clip, floor=floor).tobytes()


def test_in_place_path_declines_what_it_cannot_read():
    from exaq_cpu import _core
    x = scores(4, 40, 0)
    for args in [(x.T, 2, -1), (x.astype(np.float64), 2, -1), (x, 2, 0), (x.tolist(), 2, -1),
                 (x[:, ::2], 2, -1), (x.astype(">f4"), 2, -1), (x, True, -1), (x, 2, True), (x, 5, -1)]:
        assert _packed_in_place(args[0], args[1], args[2], "gauss", "exp") is None
    assert _packed_in_place(x, 2, -1, "no such mode", "exp") is None
    assert _packed_in_place(x, 2, -1, -np.inf, "exp") is None
    assert _packed_in_place(x, 2, -1, "gauss", "floor") is None
    assert _packed_in_place(x, 2, 1, -2.0, "zero") is not None
    with pytest.raises(ValueError):
        exaq_cpu.softmax(x, 5, output="packed")
    with pytest.raises(TypeError):
        exaq_cpu.softmax(x, 2, axis=True, output="packed")


def test_core_packed_entry_checks_its_result_description():
    from exaq_cpu import _core
    rows = np.zeros((6, 8), np.float32)
    args = (rows, 2, "gauss", -1.66, -1.85, 0.0, "exp")
    with pytest.raises(ValueError, match="do not match"):
        _core.softmax_packed(*args, exaq_cpu.PackedSoftmax, (2, 4, 8), 2)  # 8 rows, not 6
    with pytest.raises(ValueError, match="do not match"):
        _core.softmax_packed(*args, exaq_cpu.PackedSoftmax, (6, 9), 1)
    with pytest.raises(TypeError):
        _core.softmax_packed(*args, dict, (6, 8), 1)
    out = _core.softmax_packed(*args, exaq_cpu.PackedSoftmax, (2, 8, 3), 1)  # axis in the middle
    assert out.codes.shape == (2, 3, 2) and out.table.shape == (2, 3, 4) and out.lengths.shape == (2, 3)
    with pytest.raises(AttributeError):
        out._set_fields(out.codes, out.table, out.lengths, None, 2, (2, 8, 3), 1)
    with pytest.raises(AttributeError):
        out.codes = out.codes


def test_corrupt_inputs_raise_value_error(tmp_path):
    x = scores(3, 20, 8)
    ps = exaq_cpu.softmax(x, 2, output="packed")
    args = dict(codes=ps.codes, table=ps.table, lengths=ps.lengths, mask=None, bits=2, shape=ps.shape, axis=1)
    bad = [dict(codes=ps.codes[:, :-1]), dict(table=ps.table[:, :3]),
           dict(bits=3), dict(bits=5), dict(lengths=ps.lengths + 100), dict(lengths=ps.lengths - 100),
           dict(mask=np.zeros((3, 2), np.uint8)), dict(shape=(3, 21)), dict(axis=5),
           dict(shape="abc")]
    for change in bad:
        with pytest.raises(ValueError):
            exaq_cpu.PackedSoftmax(**{**args, **change})
    for change in [dict(codes=ps.codes.astype(np.int16)), dict(codes=[1, 2])]:  # wrong types (docs/errors.md)
        with pytest.raises(TypeError):
            exaq_cpu.PackedSoftmax(**{**args, **change})
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError):
        exaq_cpu.PackedSoftmax.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", codes=ps.codes)
    with pytest.raises(ValueError):
        exaq_cpu.PackedSoftmax.load(tmp_path / "partial.npz")
    good = tmp_path / "good.npz"
    ps.save(good)
    raw = good.read_bytes()
    (tmp_path / "short.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError):
        exaq_cpu.PackedSoftmax.load(tmp_path / "short.npz")
    with pytest.raises(ValueError):
        exaq_cpu.softmax(x, None, output="packed")
    with pytest.raises(ValueError):
        exaq_cpu.softmax(x, 2, output="bytes")
    with pytest.raises(ValueError):
        exaq_cpu.softmax(x, 2, output="packed", out=np.empty_like(x))
    with pytest.raises(ValueError):
        exaq_cpu.softmax(x, 5, output="packed")
    with pytest.raises(AttributeError):
        ps.bits = 3


@HYP
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=3), bits=st.sampled_from([2, 3, 4]),
       mask_rate=st.sampled_from([0.0, 0.2, 0.9]), prefix=st.booleans(), seed=st.integers(0, 2**31))
def test_property_backends_agree(shape, bits, mask_rate, prefix, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    if mask_rate and x.size:
        if prefix:
            cut = rng.integers(0, shape[-1] + 1, size=shape[:-1] + [1])
            x[np.arange(shape[-1]) >= cut] = -np.inf
        else:
            x[rng.random(shape) < mask_rate] = -np.inf
    codes = rng.integers(0, 1 << bits, size=shape, dtype=np.uint8)
    results = {}
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            ps = exaq_cpu.softmax(x, bits, output="packed")
            assert ps.to_float().tobytes() == exaq_cpu.softmax(x, bits).tobytes()
            if prefix:
                assert ps.mask is None
            packed = exaq_cpu.pack(codes, bits)
            assert np.array_equal(exaq_cpu.unpack(packed, bits, shape[-1]), codes)
            results[name] = (ps.codes, ps.table, ps.lengths, ps.mask, packed)
    ref = results["scalar"]
    for name, got in results.items():
        for a, b in zip(got, ref):
            assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True), name


# --- long sums: exact to float64 rounding of the code counts, any length, any path ---------


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lutsum_long_rows_exact(bits):
    """2^24 random codes: float32 lanes were 2.4e-4..1.5e-3 off and the backends disagreed."""
    rng = np.random.default_rng(bits)
    n = (1 << 24) + 5
    codes = rng.integers(0, 1 << bits, size=n).astype(np.uint8)
    packed = exaq_cpu.pack(codes, bits)
    lut = rng.uniform(0.01, 1.0, 1 << bits).astype(np.float32)
    counts = np.bincount(codes, minlength=1 << bits)
    exact = math.fsum(int(c) * float(v) for c, v in zip(counts, lut))
    for be in exaq_cpu.backends():
        for method in ("auto", "table"):
            got = float(exaq_cpu.lutsum(packed, bits, lut, n=n, method=method, backend=be))
            assert abs(got - exact) <= 1e-12 * exact, (be, method, got, exact)


def test_lutsum_table_ones_keep_counting():
    """Sums of ones are counts: exact, also where float lanes stop growing (2^24 a lane)."""
    n = (3 << 27) + 12  # 96 MiB of 2-bit codes, all code 3: a float lane would stop at 2^26
    packed = np.full(n // 4, 0xFF, np.uint8)
    ones = np.ones(4, np.float32)
    for method in ("auto", "table"):
        assert float(exaq_cpu.lutsum(packed, 2, ones, method=method)) == float(n)
    del packed
