"""Decoding of GGUF "scale x integer (+ min)" blocks into integer codes and per-sub-block affine maps.

Every format handled here stores, for each sub-block of 16 or 32 consecutive weights of a row,

    w = s * u + c          u an unsigned integer of q bits (0 .. 2**q - 1)

with ``s`` and ``c`` derived from float16 fields of the block (and, for the K-quants, small
integer sub-block scales and mins).  Formats that store a signed integer (Q4_0, Q5_0, Q8_0,
Q3_K, Q6_K) are written the same way with ``u`` the integer shifted to be non-negative and
``c = -shift * s``.  That is exactly the uniform quantization which binary-coding quantization
represents without loss (see :meth:`exaq_cpu.lutgemm.BCQMatrix.from_gguf`).

Only NumPy and the published block layouts are used; the ``gguf`` package is not needed to
decode (it is needed only to read ``.gguf`` files).  Each decoder takes the blocks as a
``(n_blocks, type_size)`` uint8 array and returns

    u: (n_blocks, block_size) uint8 codes in element order
    s: (n_blocks, n_sub) float32, the sub-block step, computed in float32 as the reference
       dequantization does (these products are exact: few significant bits)
    c: (n_blocks, n_sub) float64, the value of code 0 (exact)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["FORMATS", "GGUFFormat", "decode_blocks", "resolve_type"]


class GGUFFormat(NamedTuple):
    name: str
    type_id: int  # ggml type number, as in the GGUF tensor info
    block_size: int  # weights per block
    type_size: int  # bytes per block
    sub_size: int  # weights per sub-block (one step and one code-0 value each)
    bits: int  # width of the unsigned codes


FORMATS = {
    f.name: f
    for f in (
        GGUFFormat("Q4_0", 2, 32, 18, 32, 4),
        GGUFFormat("Q4_1", 3, 32, 20, 32, 4),
        GGUFFormat("Q5_0", 6, 32, 22, 32, 5),
        GGUFFormat("Q5_1", 7, 32, 24, 32, 5),
        GGUFFormat("Q8_0", 8, 32, 34, 32, 8),
        GGUFFormat("Q2_K", 10, 256, 84, 16, 2),
        GGUFFormat("Q3_K", 11, 256, 110, 16, 3),
        GGUFFormat("Q4_K", 12, 256, 144, 32, 4),
        GGUFFormat("Q5_K", 13, 256, 176, 32, 5),
        GGUFFormat("Q6_K", 14, 256, 210, 16, 6),
    )
}
_BY_ID = {f.type_id: f for f in FORMATS.values()}


def resolve_type(ggml_type) -> GGUFFormat:
    """A supported format from a ggml type number, a ``gguf.GGMLQuantizationType`` or a name."""
    if isinstance(ggml_type, str):
        fmt = FORMATS.get(ggml_type.upper())
        if fmt is None:
            raise ValueError(
                f"ggml_type {ggml_type!r} is not a scale x integer block format; "
                f"supported: {', '.join(FORMATS)}"
            )
        return fmt
    if isinstance(ggml_type, bool) or not isinstance(ggml_type, (int, np.integer)):
        raise TypeError(
            f"ggml_type must be a ggml type number, a gguf.GGMLQuantizationType or a name such as "
            f"'Q4_1', got {type(ggml_type).__name__}"
        )
    fmt = _BY_ID.get(int(ggml_type))
    if fmt is None:
        name = getattr(ggml_type, "name", None) or str(int(ggml_type))
        raise ValueError(
            f"ggml_type {name} is not a scale x integer block format; supported: {', '.join(FORMATS)}"
        )
    return fmt


def _f16(blocks, start):
    """The float16 field at byte ``start`` of every block, as float32 (n_blocks, 1)."""
    return np.ascontiguousarray(blocks[:, start:start + 2]).view(np.float16).astype(np.float32)


def _nibbles_32(qs):
    """16 bytes per 32 weights: low nibbles are weights 0..15, high nibbles weights 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _bit_per_element(qh32, n_elem):
    """32 bytes of high bits for 256 weights: weight e uses bit e // 32 of byte e % 32."""
    shifts = np.arange(n_elem // 32, dtype=np.uint8)
    return ((qh32[:, None, :] >> shifts[None, :, None]) & 1).reshape(qh32.shape[0], n_elem)


def _two_bit_256(qs64):
    """64 bytes of 2-bit fields for 256 weights: two halves of 32 bytes; in half h, bits 2k..2k+1
    of byte l hold weight 128 h + 32 k + l."""
    nb = qs64.shape[0]
    shifts = np.array([0, 2, 4, 6], np.uint8)
    return ((qs64.reshape(nb, 2, 1, 32) >> shifts[None, None, :, None]) & 3).reshape(nb, 256)


def _k_scale_min_6bit(sc12):
    """The twelve bytes of 6-bit scales and mins of Q4_K / Q5_K (eight sub-blocks).
    Sub-blocks 0..3: scale = low 6 bits of byte j, min = low 6 bits of byte j+4.
    Sub-blocks 4..7: the low 4 bits come from byte j+4 (scale: low nibble, min: high nibble),
    the top 2 bits from the top 2 bits of byte j-4 (scale) and byte j (min)."""
    a, b, c = sc12[:, 0:4], sc12[:, 4:8], sc12[:, 8:12]
    scale = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)], axis=-1)
    mins = np.concatenate([b & 0x3F, (c >> 4) | ((b >> 6) << 4)], axis=-1)
    return scale, mins


def _q3k_scales(sc12):
    """Sixteen 6-bit signed (bias 32) scales of Q3_K: low nibbles of bytes 0..7 are scales 0..7,
    high nibbles scales 8..15; the top 2 bits of scale j are bits 2*(j//4)..+1 of byte 8 + j%4."""
    low = np.concatenate([sc12[:, 0:8] & 0x0F, sc12[:, 0:8] >> 4], axis=-1)
    j = np.arange(16)
    high = (sc12[:, 8 + j % 4] >> (2 * (j // 4)).astype(np.uint8)) & 3
    return (low | (high << 4)).astype(np.int16) - 32


def decode_blocks(fmt: GGUFFormat, blocks: np.ndarray):
    """(u, s, c) of ``blocks`` ((n_blocks, type_size) uint8) in format ``fmt``; see the module doc."""
    nb = blocks.shape[0]
    name = fmt.name
    if name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        d = _f16(blocks, 0)
        if name == "Q8_0":
            u = (blocks[:, 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
            return u, d, -128.0 * d.astype(np.float64)
        has_min = name.endswith("_1")
        pos = 4 if has_min else 2
        if name.startswith("Q5"):
            qh = np.ascontiguousarray(blocks[:, pos:pos + 4])
            high = np.unpackbits(qh, axis=-1, bitorder="little")  # bit e (LSB first) = weight e
            pos += 4
        u = _nibbles_32(blocks[:, pos:pos + 16])
        if name.startswith("Q5"):
            u |= high << 4
        if has_min:
            c = _f16(blocks, 2).astype(np.float64)
        else:
            c = -float(2 ** (fmt.bits - 1)) * d.astype(np.float64)
        return u, d, c
    if name == "Q2_K":
        sc = blocks[:, 0:16]
        u = _two_bit_256(blocks[:, 16:80])
        d, dmin = _f16(blocks, 80), _f16(blocks, 82)
        s = d * (sc & 0x0F).astype(np.float32)
        c = -(dmin * (sc >> 4).astype(np.float32)).astype(np.float64)
        return u, s, c
    if name == "Q3_K":
        hbit = _bit_per_element(blocks[:, 0:32], 256)
        u = _two_bit_256(blocks[:, 32:96]) | (hbit << 2)  # stored value = u - 4
        s = _f16(blocks, 108) * _q3k_scales(blocks[:, 96:108]).astype(np.float32)
        return u, s, -4.0 * s.astype(np.float64)
    if name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        scale, mins = _k_scale_min_6bit(blocks[:, 4:16])
        pos = 16
        if name == "Q5_K":
            high = _bit_per_element(blocks[:, 16:48], 256)
            pos = 48
        qs = blocks[:, pos:pos + 128].reshape(nb, 4, 32)  # chunk k: low nibbles = sub-block 2k, high = 2k+1
        u = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(nb, 256)
        if name == "Q5_K":
            u |= high << 4
        s = d * scale.astype(np.float32)
        c = -(dmin * mins.astype(np.float32)).astype(np.float64)
        return u, s, c
    if name == "Q6_K":
        ql = blocks[:, 0:128].reshape(nb, 2, 1, 64)
        low = (ql >> np.array([0, 4], np.uint8)[None, None, :, None]) & 0x0F  # half h: low nibbles, then high
        high = blocks[:, 128:192].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]
        u = low.reshape(nb, 256) | ((high & 3).reshape(nb, 256) << 4)  # stored value = u - 32
        s = _f16(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(np.float32)
        return u, s, -32.0 * s.astype(np.float64)
    raise AssertionError(name)  # pragma: no cover - resolve_type admits only the formats above
