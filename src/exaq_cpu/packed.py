"""Packed EXAQ codes: softmax rows as 2/3/4-bit codes plus a per-row probability table.

Format (``docs/packed.md``): along the softmax axis, code ``j`` of a row sits at
bit ``j*bits`` of the row's little-endian bit stream (bit ``i`` is bit ``i % 8``
of byte ``i // 8``); every row starts on a byte boundary and is
``ceil(n*bits/8)`` bytes long, padding bits are 0.  2 bits: four codes a byte,
4 bits: two, 3 bits: eight codes in three bytes (codes cross byte boundaries).
Masks: ``lengths`` (valid prefix of each row: 1 + index of its last unmasked
entry) and, only when some row has a masked entry before that point, a bitmap
``mask`` (``ceil(n/8)`` bytes a row, bit set = masked, same bit order, which
``np.unpackbits(..., bitorder="little")`` reads).  Masked entries hold code 0.
"""
from __future__ import annotations

import io
import numbers
import os
from typing import Optional, Union

import numpy as np

from . import _core
from ._backend import call_backend
from ._clip import clip_params
from ._npz import NpzReader
from ._args import ClipArg, batch_shape_of, check_axis, check_bits, restore_axis, to_rows

_FORMAT_VERSION = 1


def packed_row_bytes(n: int, bits: int) -> int:
    """Bytes of one packed row of ``n`` codes at ``bits`` bits: ``ceil(n*bits/8)``."""
    return (int(n) * int(bits) + 7) // 8


class PackedSoftmax(_core.PackedFields):
    """EXAQ softmax output kept as packed codes plus each row's probability table.

    ``codes``: uint8, ``batch_shape + (ceil(n*bits/8),)``, the packed codes of
    every row (softmax axis moved last, see the module doc for the bit layout).
    ``table``: float32, ``batch_shape + (2**bits,)``: probability of each code
    (NaN for rows with NaN/+inf, zeros for fully masked rows).  ``lengths``:
    int64, ``batch_shape``: valid prefix of each row; entries at or past it are
    masked.  ``mask``: None, or uint8 ``batch_shape + (ceil(n/8),)`` bitmap (bit
    set = masked) when some masked entry lies before its row's length.
    ``shape``/``axis``: the float output's shape and softmax axis.
    ``batch_shape`` is ``shape`` without ``axis``.

    ``to_float()`` equals ``softmax(x, bits, ...)`` bit for bit.  Picklable;
    ``save``/``load`` use ``np.savez``.  The constructor checks every array and
    raises ValueError on inconsistent input.
    """

    __slots__ = ()  # the fields live in _core.PackedFields (read-only)

    def __init__(self, codes, table, lengths, mask, bits: int, shape, axis: int):
        bits = check_bits(bits)
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError) as err:
            raise ValueError(f"shape must be a tuple of ints, got {shape!r}") from err
        if not shape or any(s < 0 for s in shape):
            raise ValueError(f"invalid shape {shape!r}")
        try:
            axis = check_axis(axis, len(shape))
        except TypeError as err:
            raise ValueError(str(err)) from err
        n = shape[axis]
        batch = batch_shape_of(shape, axis)
        codes = self._array(codes, "codes", np.uint8, batch + (packed_row_bytes(n, bits),))
        table = self._array(table, "table", np.float32, batch + (1 << bits,))
        lengths = self._array(lengths, "lengths", np.int64, batch)
        if lengths.size and (lengths.min() < 0 or lengths.max() > n):
            raise ValueError(f"lengths must lie in [0, {n}]")
        if mask is not None:
            mask = self._array(mask, "mask", np.uint8, batch + ((n + 7) // 8,))
        self._set_fields(codes, table, lengths, mask, bits, shape, axis)

    @staticmethod
    def _array(value, name, dtype, shape) -> np.ndarray:
        # a wrong type or dtype is a TypeError, a wrong shape a ValueError (docs/errors.md)
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
        if value.dtype != dtype:
            raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
        return value

    def __setattr__(self, name, value):
        raise AttributeError("PackedSoftmax is immutable")

    def __reduce__(self):
        return (PackedSoftmax, (self.codes, self.table, self.lengths, self.mask, self.bits,
                                self.shape, self.axis))

    def __repr__(self) -> str:
        return (f"PackedSoftmax(shape={self.shape}, axis={self.axis}, bits={self.bits}, "
                f"mask={'bitmap' if self.mask is not None else 'lengths'}, nbytes={self.nbytes})")

    @property
    def n(self) -> int:
        """Length of the softmax axis."""
        return self.shape[self.axis]

    @property
    def batch_shape(self) -> tuple:
        return batch_shape_of(self.shape, self.axis)

    @property
    def nbytes(self) -> int:
        """Bytes held: packed codes, tables, lengths and the bitmap if any."""
        return int(self.codes.nbytes + self.table.nbytes + self.lengths.nbytes
                   + (self.mask.nbytes if self.mask is not None else 0))

    def unpacked_codes(self) -> np.ndarray:
        """Codes as uint8 in the float output's layout (masked entries 0)."""
        return restore_axis(self._unpack_rows(), self.batch_shape, self.axis)

    def _unpack_rows(self) -> np.ndarray:
        n, r = self.n, int(np.prod(self.batch_shape, dtype=np.int64))
        codes = np.empty((r, n), np.uint8)
        _core.unpack_codes(np.ascontiguousarray(self.codes).reshape(r, self.codes.shape[-1]), self.bits, codes)
        return codes

    def masked(self) -> np.ndarray:
        """Boolean mask in the float output's layout: True where the entry is masked."""
        return restore_axis(self._masked_rows(), self.batch_shape, self.axis)

    def _masked_rows(self) -> np.ndarray:
        n, r = self.n, int(np.prod(self.batch_shape, dtype=np.int64))
        out = np.arange(n)[None, :] >= self.lengths.reshape(r, 1)
        if self.mask is not None and n:
            bits = np.unpackbits(self.mask.reshape(r, self.mask.shape[-1]), axis=1, count=n, bitorder="little")
            out |= bits.astype(bool)
        return out

    def to_float(self, dtype=None) -> np.ndarray:
        """The probabilities, equal bit for bit to ``softmax(x, bits, ...)`` (float32)."""
        n, r = self.n, int(np.prod(self.batch_shape, dtype=np.int64))
        table = self.table.reshape(r, 1 << self.bits)
        if self.bits == 2:  # one fused pass in C: lookups, mask bitmap and lengths
            p = np.empty((r, n), np.float32)
            mask = None if self.mask is None else np.ascontiguousarray(self.mask).reshape(r, -1)
            _core.expand_pack2(np.ascontiguousarray(self.codes).reshape(r, self.codes.shape[-1]),
                               np.ascontiguousarray(self.lengths, np.int64).reshape(r),
                               mask, np.ascontiguousarray(table, np.float32), p)
            result = restore_axis(p, self.batch_shape, self.axis)
            return result if dtype is None else result.astype(dtype)
        p = np.take_along_axis(table, self._unpack_rows(), axis=1) if n else np.empty((r, 0), np.float32)
        live = ~np.isnan(table[:, 0])  # rows with NaN/+inf stay NaN everywhere
        p[self._masked_rows() & live[:, None]] = 0.0
        result = restore_axis(p, self.batch_shape, self.axis)
        return result if dtype is None else result.astype(dtype)

    def save(self, file: Union[str, os.PathLike, io.IOBase]) -> None:
        """Write with ``np.savez`` (read back with :meth:`PackedSoftmax.load`)."""
        np.savez(file, format_version=np.int64(_FORMAT_VERSION), bits=np.int64(self.bits),
                 axis=np.int64(self.axis), shape=np.asarray(self.shape, np.int64), codes=self.codes,
                 table=self.table, lengths=self.lengths,
                 mask=self.mask if self.mask is not None else np.zeros(0, np.uint8),
                 has_mask=np.bool_(self.mask is not None))

    @classmethod
    def load(cls, file) -> "PackedSoftmax":
        """Read a file written by :meth:`save`; ValueError if it is not a valid one.

        Safe on untrusted files: each member's header is checked against the fields before its
        bytes are read (see docs/errors.md), nothing is unpickled, unused members are not read.
        """
        with NpzReader(file, "a saved PackedSoftmax") as z:
            if z.scalar_int("format_version", 0, 1 << 31) != _FORMAT_VERSION:
                raise ValueError("unsupported PackedSoftmax format version")
            bits = z.scalar_int("bits", 2, 4)
            shape = z.array("shape", kinds="iu", ndim=1, max_bytes=8 * 32)
            if shape.size == 0 or int(shape.min()) < 0:
                raise ValueError(f"a saved PackedSoftmax: field 'shape' is invalid: {shape.tolist()}")
            shape = tuple(int(s) for s in shape)
            axis = z.scalar_int("axis", -len(shape), len(shape) - 1)
            has_mask = z.array("has_mask", kinds="b", shape=())
            n = shape[axis]
            batch = batch_shape_of(shape, axis % len(shape))
            codes = z.array("codes", np.uint8, shape=batch + (packed_row_bytes(n, bits),))
            table = z.array("table", np.float32, shape=batch + (1 << bits,))
            lengths = z.array("lengths", np.int64, shape=batch)
            mask = z.array("mask", np.uint8, shape=batch + ((n + 7) // 8,)) if bool(has_mask) else None
        return cls(codes, table, lengths, mask, bits, shape, axis)


def _softmax_packed(arr: np.ndarray, bits: int, axis: int, clip: ClipArg, floor: str,
                    threads=None) -> PackedSoftmax:
    """The fused path of ``softmax(..., output="packed")``: codes are packed in C
    as each row is quantized; no float probability is written.  The result's
    arrays are made in their final (batch) shape."""
    rows = to_rows(arr, axis)
    return _core.softmax_packed(rows, bits, *clip_params(clip, bits, floor, rows), floor, PackedSoftmax,
                                arr.shape, axis, threads)


def pack(codes, bits: int, *, axis: int = -1, backend: Optional[str] = None) -> np.ndarray:
    """Pack integer codes (each in ``0 .. 2**bits-1``) along ``axis``.

    Returns uint8 with ``axis`` of length ``ceil(n*bits/8)`` (same position);
    layout in the module doc / ``docs/packed.md``.  ValueError for codes out of
    range or bits not in (2, 3, 4); TypeError for non-integer input.
    ``backend``: a backend name for this call only (``exaq_cpu.use_backend``).
    """
    if backend is not None:
        with call_backend(backend):
            return pack(codes, bits, axis=axis)
    bits = check_bits(bits)
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"codes must be integers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("codes must have at least one dimension")
    axis = check_axis(axis, arr.ndim)
    if arr.size and (arr.min() < 0 or arr.max() >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] for bits={bits}")
    rows = to_rows(arr, axis, np.uint8)
    out = np.empty((rows.shape[0], packed_row_bytes(rows.shape[1], bits)), np.uint8)
    _core.pack_codes(rows, bits, out)
    return restore_axis(out, batch_shape_of(arr.shape, axis), axis)


def unpack(packed, bits: int, n: Optional[int] = None, *, axis: int = -1,
           backend: Optional[str] = None) -> np.ndarray:
    """Inverse of :func:`pack`: uint8 codes, ``n`` along ``axis``.

    ``n`` defaults to as many codes as the bytes hold (``8*nbytes // bits``).
    ValueError if ``packed`` is not uint8 or its length along ``axis`` is not
    ``ceil(n*bits/8)``.  ``backend``: a backend name for this call only.
    """
    if backend is not None:
        with call_backend(backend):
            return unpack(packed, bits, n, axis=axis)
    bits = check_bits(bits)
    arr = np.asarray(packed)
    if arr.dtype != np.uint8:
        raise TypeError(f"packed codes must be uint8, got dtype {arr.dtype}")  # docs/errors.md
    if arr.ndim == 0:
        raise ValueError("packed codes must have at least one dimension")
    axis = check_axis(axis, arr.ndim)
    nbytes = arr.shape[axis]
    if n is None:
        n = 8 * nbytes // bits
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    n = int(n)
    if packed_row_bytes(n, bits) != nbytes:
        raise ValueError(f"{n} codes of {bits} bits take {packed_row_bytes(n, bits)} bytes, "
                         f"got {nbytes} along axis {axis}")
    rows = to_rows(arr, axis, np.uint8)
    out = np.empty((rows.shape[0], n), np.uint8)
    _core.unpack_codes(rows, bits, out)
    return restore_axis(out, batch_shape_of(arr.shape, axis), axis)


def lutsum(packed, bits: int, lut, n: Optional[int] = None, *, lengths=None, axis: int = -1,
           method: str = "auto", backend: Optional[str] = None) -> np.ndarray:
    """LUTsum: per row of packed codes, the sum of ``lut[code]`` over its codes (float64).

    ``lut``: ``2**bits`` floats (shared) or ``batch_shape + (2**bits,)`` (one
    table a row), e.g. a row's exponent table ``exp(lo + k*|lo|/(2**bits-1))``.
    ``lengths`` (optional, batch shape): sum only each row's first codes.
    ``method="auto"``: 2 bits: the active backend's kernel (SIMD backends count
    codes exactly with popcounts; the scalar backend uses the paper's table);
    3/4 bits: codes counted in integers on every backend; ``"table"``: the
    paper's LUTsum, a byte-indexed table of sums (256 entries for 2 and 4 bits,
    4096 entries indexed by 12 bits for 3 bits) accumulated in float64, which
    needs a shared ``lut``.  Every path is exact to float64 rounding of
    ``sum_k count_k * lut[k]`` whatever the row length (docs/packed.md).
    ``backend``: a backend name for this call only (``exaq_cpu.use_backend``).
    """
    if backend is not None:
        with call_backend(backend):
            return lutsum(packed, bits, lut, n, lengths=lengths, axis=axis, method=method)
    bits = check_bits(bits)
    if method not in ("auto", "table"):
        raise ValueError(f"method must be 'auto' or 'table', got {method!r}")
    arr = np.asarray(packed)
    if arr.dtype != np.uint8:  # a wrong dtype is a wrong type (docs/errors.md)
        raise TypeError(f"packed codes must be a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("packed codes must have at least one dimension")
    axis = check_axis(axis, arr.ndim)
    nbytes = arr.shape[axis]
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    n = 8 * nbytes // bits if n is None else int(n)
    if n < 0 or packed_row_bytes(n, bits) != nbytes:
        raise ValueError(f"{n} codes of {bits} bits do not take {nbytes} bytes")
    rows = to_rows(arr, axis, np.uint8)
    batch = batch_shape_of(arr.shape, axis)
    lut_arr = np.asarray(lut, dtype=np.float32)
    size = 1 << bits
    if lut_arr.shape == (size,):
        luts = np.zeros((1, 16), np.float32)
        luts[0, :size] = lut_arr
    elif lut_arr.shape == batch + (size,):
        luts = np.zeros((rows.shape[0], 16), np.float32)
        luts[:, :size] = lut_arr.reshape(-1, size)
        if method == "table" and rows.shape[0] > 1:
            raise ValueError("method='table' needs one shared lut")
    else:
        raise ValueError(f"lut must have shape ({size},) or {batch + (size,)}, got {lut_arr.shape}")
    lens = None
    if lengths is not None:
        lens = np.ascontiguousarray(np.broadcast_to(np.asarray(lengths, np.int64), batch)).reshape(-1)
        if lens.size and (lens.min() < 0 or lens.max() > n):
            raise ValueError(f"lengths must lie in [0, {n}]")
    sums = np.empty(rows.shape[0], np.float64)
    _core.lutsum(rows, n, bits, luts, sums, lens, method == "table")
    return sums.reshape(batch)


def exponent_table(lo, bits: int, floor: str = "exp") -> np.ndarray:
    """LUTexp of a range low end ``lo``: ``exp(lo + k*|lo|/(2**bits-1))``, last entry 1
    (``floor="zero"``: entry 0 is 0), float32, shape ``lo.shape + (2**bits,)``."""
    bits = check_bits(bits)
    lo = np.asarray(lo, np.float64)
    levels = (1 << bits) - 1
    k = np.arange(levels + 1)
    e = np.exp(lo[..., None] + k * (-lo[..., None]) / levels)
    e[..., levels] = 1.0
    if floor == "zero":
        e[..., 0] = 0.0
    return e.astype(np.float32)


_core.set_packed_type(PackedSoftmax)  # the fast entry (_core.softmax_common) makes results of this class
