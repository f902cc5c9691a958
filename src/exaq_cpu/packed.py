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
    """Bytes of one packed row of ``n`` codes at ``bits`` bits: ``ceil(n*bits/8)``.

    Parameters
    ----------
    n : int
        Codes in the row (taken through ``int()``).
    bits : int
        Bits per code (taken through ``int()``; not checked against 2..4).

    Returns
    -------
    int
        The length of the packed axis that :func:`pack` makes and
        :func:`unpack` and :func:`lutsum` expect for ``n`` codes.

    See Also
    --------
    pack, unpack

    Examples
    --------
    >>> import exaq_cpu
    >>> exaq_cpu.packed_row_bytes(5, 2), exaq_cpu.packed_row_bytes(8, 3), exaq_cpu.packed_row_bytes(9, 3)
    (2, 3, 4)
    """
    return (int(n) * int(bits) + 7) // 8


class PackedSoftmax(_core.PackedFields):
    """EXAQ softmax output kept as packed codes plus each row's probability table.

    Usually made by ``softmax(x, bits, output="packed")``; the constructor
    assembles one from its fields (``docs/packed.md``, ``docs/semantics.md``
    section 6.1).  ``to_float()`` equals ``softmax(x, bits, ...)`` bit for bit.
    Instances are immutable and picklable; :meth:`save`/:meth:`load` use
    ``np.savez``.  Below, ``n = shape[axis]`` and ``batch_shape`` is ``shape``
    without ``axis``.

    Parameters
    ----------
    codes : numpy.ndarray of uint8
        ``batch_shape + (ceil(n*bits/8),)``: the packed codes of every row
        (softmax axis moved last; bit layout in the module doc).
    table : numpy.ndarray of float32
        ``batch_shape + (2**bits,)``: the probability of each code.
    lengths : numpy.ndarray of int64
        ``batch_shape``: each row's valid prefix, in ``0 .. n``.
    mask : numpy.ndarray of uint8 or None
        None, or a ``batch_shape + (ceil(n/8),)`` bitmap (bit ``j % 8`` of
        byte ``j // 8`` set = entry ``j`` masked).
    bits : {2, 3, 4}
        Code width.
    shape : tuple of int
        The float output's shape (at least one dimension).
    axis : int
        The softmax axis of ``shape`` (negative values count from the end).

    Attributes
    ----------
    codes, table, lengths, mask, bits, shape : as given
        Read-only.  ``table`` is NaN for rows with NaN/+inf and all zeros for
        fully masked rows; entries at or past a row's ``lengths`` are masked;
        ``mask`` is present only when some masked entry lies before its row's
        length.
    axis : int
        The softmax axis, normalized to ``0 .. len(shape) - 1``.
    n, batch_shape, nbytes
        See the properties below.

    Raises
    ------
    TypeError
        If ``codes``, ``table``, ``lengths`` or ``mask`` is not a
        ``numpy.ndarray`` of the dtype above, or ``bits`` is not an int.
    ValueError
        If an array has another shape than the one above, ``lengths`` leaves
        ``0 .. n``, ``bits`` is not 2, 3 or 4, ``shape`` is not a non-empty
        tuple of non-negative ints, or ``axis`` is out of range.

    See Also
    --------
    softmax : ``output="packed"`` makes one.
    lutsum : sums over packed codes.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> x = np.array([[2.0, -np.inf, 0.0, -3.0, 1.0]], np.float32)
    >>> P = exaq_cpu.softmax(x, bits=2, output="packed")
    >>> P
    PackedSoftmax(shape=(1, 5), axis=1, bits=2, mask=bitmap, nbytes=27)
    >>> P.codes, P.lengths                       # 5 codes in 2 bytes
    (array([[35,  2]], dtype=uint8), array([5]))
    >>> bool(np.array_equal(P.to_float(), exaq_cpu.softmax(x, bits=2)))
    True

    Built from its fields:

    >>> codes = exaq_cpu.pack(np.array([[3, 2, 0, 1]]), 2)
    >>> table = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    >>> Q = exaq_cpu.PackedSoftmax(codes, table, np.array([3], np.int64), None, 2, (1, 4), -1)
    >>> Q.to_float()                             # the last entry lies past lengths: masked
    array([[0.4, 0.3, 0.1, 0. ]], dtype=float32)
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
        """Length of the softmax axis, ``shape[axis]`` (int).

        Examples
        --------
        >>> import numpy as np, exaq_cpu
        >>> exaq_cpu.softmax(np.zeros((2, 7, 3), np.float32), 2, axis=1, output="packed").n
        7
        """
        return self.shape[self.axis]

    @property
    def batch_shape(self) -> tuple:
        """``shape`` without ``axis`` (tuple of int): one packed row for each index.

        Examples
        --------
        >>> import numpy as np, exaq_cpu
        >>> P = exaq_cpu.softmax(np.zeros((2, 7, 3), np.float32), 2, axis=1, output="packed")
        >>> P.batch_shape, P.codes.shape, P.table.shape
        ((2, 3), (2, 3, 2), (2, 3, 4))
        """
        return batch_shape_of(self.shape, self.axis)

    @property
    def nbytes(self) -> int:
        """Bytes held (int): packed codes, tables, lengths and the bitmap if any.

        Examples
        --------
        >>> import numpy as np, exaq_cpu
        >>> P = exaq_cpu.softmax(np.zeros((256, 2048), np.float32), 2, output="packed")
        >>> P.nbytes, 256 * 2048 // 4 + 256 * 4 * 4 + 256 * 8    # codes + tables + lengths
        (137216, 137216)
        """
        return int(self.codes.nbytes + self.table.nbytes + self.lengths.nbytes
                   + (self.mask.nbytes if self.mask is not None else 0))

    def unpacked_codes(self) -> np.ndarray:
        """Codes as uint8 in the float output's layout (masked entries 0).

        Returns
        -------
        numpy.ndarray of uint8
            Shape ``shape``, codes ``0 .. 2**bits - 1`` along ``axis``: the
            ``codes`` of :func:`exaq_cpu.quantize` for the same call.

        See Also
        --------
        unpack : the same for bare packed bytes.

        Examples
        --------
        >>> import numpy as np, exaq_cpu
        >>> x = np.array([[2.0, -np.inf, 0.0, -3.0, 1.0]], np.float32)
        >>> exaq_cpu.softmax(x, 2, output="packed").unpacked_codes()
        array([[3, 0, 2, 0, 2]], dtype=uint8)
        """
        return restore_axis(self._unpack_rows(), self.batch_shape, self.axis)

    def _unpack_rows(self) -> np.ndarray:
        n, r = self.n, int(np.prod(self.batch_shape, dtype=np.int64))
        codes = np.empty((r, n), np.uint8)
        _core.unpack_codes(np.ascontiguousarray(self.codes).reshape(r, self.codes.shape[-1]), self.bits, codes)
        return codes

    def masked(self) -> np.ndarray:
        """Boolean mask in the float output's layout: True where the entry is masked.

        An entry is masked when it lies at or past its row's ``lengths`` or
        its ``mask`` bit is set (the ``-inf`` entries of the scores).

        Returns
        -------
        numpy.ndarray of bool
            Shape ``shape``.

        Examples
        --------
        >>> import numpy as np, exaq_cpu
        >>> x = np.array([[2.0, -np.inf, 0.0, -np.inf]], np.float32)
        >>> exaq_cpu.softmax(x, 2, output="packed").masked()
        array([[False,  True, False,  True]])
        """
        return restore_axis(self._masked_rows(), self.batch_shape, self.axis)

    def _masked_rows(self) -> np.ndarray:
        n, r = self.n, int(np.prod(self.batch_shape, dtype=np.int64))
        out = np.arange(n)[None, :] >= self.lengths.reshape(r, 1)
        if self.mask is not None and n:
            bits = np.unpackbits(self.mask.reshape(r, self.mask.shape[-1]), axis=1, count=n, bitorder="little")
            out |= bits.astype(bool)
        return out

    def to_float(self, dtype=None) -> np.ndarray:
        """The probabilities, equal bit for bit to ``softmax(x, bits, ...)`` (float32).

        ``table[code]`` for every unmasked entry, ``+0.0`` for masked ones and
        NaN throughout rows whose table is NaN.

        Parameters
        ----------
        dtype : dtype, optional
            Convert the float32 result to this dtype (``astype``).

        Returns
        -------
        numpy.ndarray
            Shape ``shape``, float32 unless ``dtype`` is given.

        Examples
        --------
        >>> import numpy as np, exaq_cpu
        >>> x = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
        >>> P = exaq_cpu.softmax(x, 3, output="packed")
        >>> bool(np.array_equal(P.to_float(), exaq_cpu.softmax(x, 3)))
        True
        >>> P.to_float(np.float64).dtype
        dtype('float64')
        """
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
        """Write with ``np.savez`` (read back with :meth:`PackedSoftmax.load`).

        Parameters
        ----------
        file : str, os.PathLike or file object
            As for ``numpy.savez``: a path (``.npz`` is appended when missing)
            or a writable binary file.  The members are stored uncompressed.

        Examples
        --------
        >>> import io
        >>> import numpy as np, exaq_cpu
        >>> P = exaq_cpu.softmax(np.arange(6, dtype=np.float32).reshape(2, 3), 4, output="packed")
        >>> buffer = io.BytesIO()
        >>> P.save(buffer)
        >>> _ = buffer.seek(0)
        >>> Q = exaq_cpu.PackedSoftmax.load(buffer)
        >>> Q.shape, Q.bits, bool(np.array_equal(Q.to_float(), P.to_float()))
        ((2, 3), 4, True)
        """
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

        Parameters
        ----------
        file : str, os.PathLike or file object
            A path or a readable, seekable binary file holding the archive.

        Returns
        -------
        PackedSoftmax

        Raises
        ------
        ValueError
            If the file is not a saved ``PackedSoftmax`` (not a zip archive, a
            missing member, another format version, members whose dtypes or
            shapes disagree, a corrupt member).
        FileNotFoundError
            If the path does not exist.

        Examples
        --------
        >>> import io, exaq_cpu
        >>> exaq_cpu.PackedSoftmax.load(io.BytesIO(b"not an archive"))
        Traceback (most recent call last):
            ...
        ValueError: not a saved PackedSoftmax: ...

        See :meth:`save` for a round trip.
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

    Each row along ``axis`` becomes a little-endian bit stream of its own:
    code ``j`` at bits ``j*bits .. j*bits + bits - 1``, padding bits 0
    (layout in the module doc, ``docs/packed.md`` and ``docs/semantics.md``
    section 6.2).

    Parameters
    ----------
    codes : array_like of int
        Integer codes (any integer dtype, not bool), at least one dimension.
    bits : {2, 3, 4}
        Bits per code.
    axis : int, default -1
        The axis packed.
    backend : str or None, default None
        A backend name for this call only (as in ``exaq_cpu.use_backend``).

    Returns
    -------
    numpy.ndarray of uint8
        ``codes``' shape with ``axis`` of length ``ceil(n*bits/8)``
        (:func:`packed_row_bytes`), in the same position.

    Raises
    ------
    TypeError
        If ``codes`` is not an integer array, or ``bits``/``axis`` is not an
        int.
    ValueError
        If a code lies outside ``0 .. 2**bits - 1``, ``bits`` is not 2, 3 or
        4, ``codes`` is 0-d, ``axis`` is out of range, or ``backend`` is
        unknown or unavailable.

    See Also
    --------
    unpack : the inverse.
    lutsum : sums a table over packed codes.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> exaq_cpu.pack([1, 2, 3, 0, 3], bits=2)    # 1 + 2*4 + 3*16 + 0*64 = 57, then 3
    array([57,  3], dtype=uint8)
    >>> packed = exaq_cpu.pack(np.arange(8), bits=3)  # 8 codes of 3 bits in 3 bytes
    >>> packed
    array([136, 198, 250], dtype=uint8)
    >>> exaq_cpu.unpack(packed, bits=3)
    array([0, 1, 2, 3, 4, 5, 6, 7], dtype=uint8)
    >>> exaq_cpu.pack(np.zeros((5, 2), np.uint8), bits=4, axis=0).shape
    (3, 2)
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

    Parameters
    ----------
    packed : array_like of uint8
        Packed codes (layout of :func:`pack`), at least one dimension.
    bits : {2, 3, 4}
        Bits per code.
    n : int, optional
        Codes per row.  Defaults to as many codes as the bytes hold
        (``8*nbytes // bits``), which counts padding codes when the row length
        was not a multiple of ``8 // gcd(8, bits)``: pass the true length.
    axis : int, default -1
        The packed axis.
    backend : str or None, default None
        A backend name for this call only.

    Returns
    -------
    numpy.ndarray of uint8
        ``packed``'s shape with ``axis`` of length ``n``.

    Raises
    ------
    TypeError
        If ``packed`` is not uint8, or ``n``, ``bits`` or ``axis`` is not an
        int.
    ValueError
        If the length of ``packed`` along ``axis`` is not
        ``ceil(n*bits/8)``, ``n`` is negative, ``bits`` is not 2, 3 or 4,
        ``packed`` is 0-d, ``axis`` is out of range, or ``backend`` is unknown
        or unavailable.

    See Also
    --------
    pack, packed_row_bytes

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> packed = exaq_cpu.pack([1, 2, 3, 0, 3], bits=2)
    >>> exaq_cpu.unpack(packed, bits=2, n=5)
    array([1, 2, 3, 0, 3], dtype=uint8)
    >>> exaq_cpu.unpack(packed, bits=2)              # 2 bytes hold 8 codes: padding included
    array([1, 2, 3, 0, 3, 0, 0, 0], dtype=uint8)
    >>> exaq_cpu.unpack(packed, bits=2, n=9)
    Traceback (most recent call last):
        ...
    ValueError: 9 codes of 2 bits take 3 bytes, got 2 along axis 0
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

    Every path is exact to float64 rounding of ``sum_k count_k * lut[k]``
    (``count_k``: how many codes of the row equal ``k``) whatever the row
    length (``docs/packed.md``, ``docs/semantics.md`` section 6.3).  Below,
    ``batch_shape`` is ``packed``'s shape without ``axis``.

    Parameters
    ----------
    packed : array_like of uint8
        Packed codes (layout of :func:`pack`), at least one dimension.
    bits : {2, 3, 4}
        Bits per code.
    lut : array_like of float
        Taken as float32: ``2**bits`` values shared by every row, or
        ``batch_shape + (2**bits,)`` (one table a row), e.g. a row's exponent
        table ``exp(lo + k*|lo|/(2**bits-1))`` (:func:`exponent_table`).
    n : int, optional
        Codes per row; default ``8*nbytes // bits`` as for :func:`unpack`
        (padding codes then count too: pass the true length).
    lengths : array_like of int, optional
        Broadcast to ``batch_shape``: sum only each row's first
        ``lengths`` codes (each in ``0 .. n``).
    axis : int, default -1
        The packed axis.
    method : {"auto", "table"}, default "auto"
        ``"auto"``: 2 bits: the active backend's kernel (SIMD backends count
        codes exactly with popcounts; the scalar backend uses the paper's
        table); 3/4 bits: codes counted in integers on every backend.
        ``"table"``: the paper's LUTsum, a byte-indexed table of sums (256
        entries for 2 and 4 bits, 4096 entries indexed by 12 bits for 3 bits)
        accumulated in float64, which needs a shared ``lut``.
    backend : str or None, default None
        A backend name for this call only (as in ``exaq_cpu.use_backend``).

    Returns
    -------
    numpy.ndarray of float64
        Shape ``batch_shape``: one sum per row.

    Raises
    ------
    TypeError
        If ``packed`` is not uint8, or ``n``, ``bits`` or ``axis`` is not an
        int.
    ValueError
        If ``lut`` has neither shape above, ``method`` is unknown or is
        ``"table"`` with one table per row (and more than one row), the
        length along ``axis`` is not ``ceil(n*bits/8)``, a length leaves
        ``0 .. n``, ``bits`` is not 2, 3 or 4, ``packed`` is 0-d, ``axis`` is
        out of range, or ``backend`` is unknown or unavailable.

    See Also
    --------
    pack, exponent_table

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> packed = exaq_cpu.pack([0, 1, 2, 3, 3], bits=2)
    >>> lut = [1.0, 10.0, 100.0, 1000.0]
    >>> exaq_cpu.lutsum(packed, 2, lut, n=5)
    array(2111.)
    >>> exaq_cpu.lutsum(packed, 2, lut, n=5, lengths=3), exaq_cpu.lutsum(packed, 2, lut, n=5, method="table")
    (array(111.), array(2111.))

    With a packed softmax's own tables, each row's probabilities add up to 1:

    >>> x = np.random.default_rng(0).standard_normal((4, 50)).astype(np.float32)
    >>> P = exaq_cpu.softmax(x, 2, output="packed")
    >>> np.round(exaq_cpu.lutsum(P.codes, 2, P.table, n=P.n), 6)
    array([1., 1., 1., 1.])
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
    """LUTexp of a range low end ``lo``: ``exp(lo + k*|lo|/(2**bits-1))``, last entry 1.

    The exponent each code ``k`` stands for, before the division by the row
    sum (``docs/semantics.md`` section 2); computed in float64, rounded once.

    Parameters
    ----------
    lo : float or array_like
        Range low end(s), negative (e.g. ``quantize(x).lo``).
    bits : {2, 3, 4}
        Code width.
    floor : {"exp", "zero"}, default "exp"
        With ``"zero"`` entry 0 is 0.  Any other value is taken as ``"exp"``.

    Returns
    -------
    numpy.ndarray of float32
        Shape ``np.shape(lo) + (2**bits,)``.

    Raises
    ------
    TypeError, ValueError
        For a ``bits`` that is not an int in 2..4.

    See Also
    --------
    lutsum : sums such a table over packed codes.

    Examples
    --------
    >>> from exaq_cpu.packed import exponent_table
    >>> exponent_table(-3.0, 2)                  # exp(-3), exp(-2), exp(-1), 1
    array([0.04978707, 0.13533528, 0.36787945, 1.        ], dtype=float32)
    >>> exponent_table([-3.0, -6.0], 2, floor="zero").shape
    (2, 4)
    """
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
