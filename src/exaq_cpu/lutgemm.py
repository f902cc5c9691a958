"""LUT-GEMM: weight-only quantized matrix multiplication by table lookups.

Weights are stored in binary-coding quantization (BCQ, ``docs/semantics.md`` section 7):
every row segment of ``group_size`` input columns is

    w ≈ alpha_0 * b_0 + ... + alpha_{q-1} * b_{q-1} + z,      b_i in {-1, +1}

and ``lut_gemm`` never dequantizes them.  For each run of 4 activations it
builds the 16 signed partial sums ``±x0 ±x1 ±x2 ±x3`` once (shared by every
output row), and each 4-bit nibble of a bit-plane picks one of them; the
partial sums of bit-plane ``i`` are scaled by ``alpha_i`` per group, plus
``z * sum(x_group)``.  By default (``precision="int8"``) the tables are int8
with one scale per weight group, read with byte shuffles and summed exactly in
integers; ``precision="exact"`` keeps float32 tables, either 16-entry ones or
the paper's 256-entry tables over 8 activations (``table="mu8"``);
``docs/lutgemm.md`` has the measurements behind the defaults.

    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> W = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    >>> Wq = lutgemm.quantize_weights(W, bits=3, group_size=128)
    >>> x = np.ones(512, np.float32)
    >>> y = lutgemm.lut_gemm(x, Wq)            # ~ x @ Wq.dequantize().T (int8 tables, ~1%)
    >>> y = lutgemm.lut_gemm(x, Wq, precision="exact")  # == it up to float rounding
    >>> y.shape
    (256,)
"""
from __future__ import annotations

import math
import numbers
import os
import warnings

import numpy as np

from . import _core, _torch
from ._args import check_bits
from ._backend import call_backend
from ._npz import NpzReader

__all__ = ["BATCH_CROSSOVER", "BCQMatrix", "BCQStack", "DEFAULT_PRECISION", "PRECISIONS", "lut_gemm",
           "preferred_table", "quantize_weights", "quantize", "uniform_quantize"]

TILE = 16  # rows per kernel tile (one zmm of float32 lanes), see c/lutgemm.h
METHODS = ("greedy", "alternating", "uniform")
DEFAULT_ITERS = 15
#: Tokens (rows of a batched ``x``), by bit width, from which ``lut_gemm(method="auto")``
#: stops using the LUT kernel and dequantizes the weights, then calls BLAS.  The LUT
#: cost grows with the bits per token; dequantize+BLAS pays ~35-60 ms for a 4096x4096
#: dequantization once, then BLAS's per-token cost (measured on AMD EPYC Zen 4,
#: 1 thread, AVX-512 backend; docs/lutgemm.md).
BATCH_CROSSOVER = {1: 512, 2: 256, 3: 128, 4: 96}
#: ``method="alternating"`` admits a group's fit only if its largest single-weight error is at
#: most this many times that of the round-to-nearest (``"uniform"``) fit; None: no guard.
OUTLIER_GUARD = 2.0
_ROW_CHUNK = 1024  # rows fitted at a time, to bound the fitting's temporary memory


class BCQMatrix:
    """A (out_features, in_features) weight matrix in binary-coding quantization.

    Every row segment of ``group_size`` columns is ``sum_i alpha_i * b_i + z``
    with ``b_i`` in {-1, +1}, one ``alpha`` per bit-plane and one offset ``z``
    per row and group (``docs/semantics.md`` section 7.1).  Usually made by
    :func:`quantize_weights`, :meth:`from_uniform` or :meth:`from_gguf`; the
    constructor takes the packed arrays themselves (layout in
    ``docs/semantics.md`` section 7.2 and ``c/lutgemm.h``).  Pickling works;
    :meth:`save` / :meth:`load` use ``.npz``.

    Parameters
    ----------
    planes : array_like of uint8
        The bit-planes, ``[tile][group][plane][byte][row of 16]``, flattened:
        ``ceil(M/16) * ceil(K/g) * bits * (g/8) * 16`` bytes.  Integer arrays
        whose values fit a byte are taken too.
    alphas : array_like of float
        ``ceil(M/16) * ceil(K/g) * bits * 16`` values (taken as float32).
    offsets : array_like of float
        ``ceil(M/16) * ceil(K/g) * 16`` values (taken as float32).
    shape : tuple of 2 ints
        ``(out_features, in_features)``, i.e. ``(M, K)``.
    bits : int
        Bit-planes, 1..4.
    group_size : int or None
        ``g``: a positive multiple of 8, or ``None`` for one group per row
        (``g = 8*ceil(K/8)``).
    method : str, optional
        A free label of how the weights were made (``"alternating"``,
        ``"uniform"``, ``"gguf-Q4_0"``, ...).

    Attributes
    ----------
    shape : tuple of int
        ``(out_features, in_features)``.
    bits : int
        Bit-planes, 1..4.
    group_size : int or None
        As given (``None`` = one group per row).
    method : str or None
        As given.
    planes, alphas, offsets : numpy.ndarray
        The flat, C-contiguous uint8 / float32 / float32 arrays the kernels read.

    Raises
    ------
    TypeError
        If ``bits`` or ``group_size`` is not an int (or ``None`` for
        ``group_size``).
    ValueError
        If ``shape`` is not two integers, ``bits`` is not in 1..4,
        ``group_size`` is not a positive multiple of 8, ``planes`` holds
        non-integers or values outside 0..255, or an array's size does not match
        ``shape``/``bits``/``group_size``.

    See Also
    --------
    quantize_weights : fit one to a float matrix.
    lut_gemm : multiply by one without dequantizing.
    BCQStack : a sum of such matrices (wide GGUF formats).

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> W = np.array([[-1.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]], np.float32)
    >>> Wq = lutgemm.quantize_weights(W, bits=2, group_size=8, method="uniform")
    >>> Wq
    BCQMatrix(shape=(1, 8), bits=2, group_size=8, method='uniform', nbytes=224)
    >>> Wq.dequantize()                          # 4 levels -1, 0, 1, 2: exact here
    array([[-1.,  0.,  1.,  2.,  2.,  1.,  0., -1.]], dtype=float32)
    >>> Wq.planes.size, Wq.alphas.size, Wq.offsets.size    # one 16-row tile, 1 group
    (32, 32, 16)
    >>> same = lutgemm.BCQMatrix(Wq.planes, Wq.alphas, Wq.offsets, Wq.shape, Wq.bits, Wq.group_size)
    >>> bool(np.array_equal(same.dequantize(), Wq.dequantize()))
    True
    """

    def __init__(self, planes, alphas, offsets, shape, bits, group_size, method=None):
        try:
            rows, cols = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise ValueError(f"shape must be two integers (out_features, in_features), got {shape!r}") from None
        bits = _check_bits(bits)
        gs = _effective_group(cols, group_size)
        tiles, groups = -(-rows // TILE), -(-cols // gs)
        planes = np.asarray(planes)
        if planes.dtype != np.uint8:
            # a cast would wrap 300 to 44 silently: only integers that fit a byte are taken
            if planes.dtype.kind not in "iu" or (planes.size and (planes.min() < 0 or planes.max() > 255)):
                raise ValueError(f"planes must hold bytes (0..255), got {planes.dtype} values")
        self.planes = np.ascontiguousarray(planes, dtype=np.uint8).reshape(-1)
        self.alphas = np.require(alphas, np.float32, ("C", "A")).reshape(-1)
        self.offsets = np.require(offsets, np.float32, ("C", "A")).reshape(-1)
        if (self.planes.size != tiles * groups * bits * (gs // 8) * TILE
                or self.alphas.size != tiles * groups * bits * TILE
                or self.offsets.size != tiles * groups * TILE):
            raise ValueError("packed arrays do not match shape/bits/group_size")
        self.shape = (rows, cols)
        self.bits = bits
        self.group_size = None if group_size is None else int(group_size)
        self.method = method
        self._gs = gs
        self._i8 = None  # the int8-mode packed form, built on first use (packed_int8)

    # -- geometry ---------------------------------------------------------
    @property
    def in_features(self) -> int:
        """Columns of the matrix, ``shape[1]``: the length ``x`` has in :func:`lut_gemm` (int)."""
        return self.shape[1]

    @property
    def out_features(self) -> int:
        """Rows of the matrix, ``shape[0]``: the length of :func:`lut_gemm`'s result (int)."""
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of packed weights: bit-planes plus float32 alphas and offsets (int).

        Rows are stored in tiles of 16, so a matrix of few rows takes as much as
        16 rows.  The int8-mode copy made by :meth:`packed_int8` is not counted.

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu import lutgemm
        >>> Wq = lutgemm.quantize_weights(np.ones((64, 256), np.float32), bits=2, group_size=128)
        >>> Wq.nbytes                        # 4096 plane bytes + 4*256 alphas + 4*128 offsets
        5632
        >>> Wq.nbytes / (64 * 256 * 4)       # against float32
        0.0859375
        """
        return self.planes.nbytes + self.alphas.nbytes + self.offsets.nbytes

    def _args(self):
        return (self.planes, self.alphas, self.offsets, self.shape[0], self.shape[1],
                self._gs, self.bits)

    def packed_int8(self):
        """The layout the integer-table kernels stream (``precision="int8"``).

        Repacked once from the planes layout on first use and kept (the planes
        stay the source of truth for ``dequantize``/``save``; the codes take as
        many bytes again).  :func:`lut_gemm` calls it; there is rarely a reason
        to call it directly.

        Returns
        -------
        tuple of numpy.ndarray
            ``(codes, alphas, offsets)``: uint8, float32, float32, in 64-row
            tiles (``docs/semantics.md`` section 7.2, ``c/lutgemm.h``).  The
            same arrays on every call.

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu import lutgemm
        >>> Wq = lutgemm.quantize_weights(np.ones((16, 64), np.float32), bits=2, group_size=32)
        >>> codes, alphas, offsets = Wq.packed_int8()
        >>> codes.dtype, alphas.dtype, Wq.packed_int8()[0] is codes
        (dtype('uint8'), dtype('float32'), True)
        """
        if self._i8 is None:
            nc, na, no = _core.bcq_i8_sizes(*self._args())
            packed = (np.zeros(nc, np.uint8), np.zeros(na, np.float32), np.zeros(no, np.float32))
            _core.bcq_pack_i8(*self._args(), *packed)
            self._i8 = packed
        return self._i8

    # -- conversion -------------------------------------------------------
    def dequantize(self) -> np.ndarray:
        """The float32 weights, ``sum_i alpha_i * b_i`` (in order i = 0..bits-1) + offset.

        Evaluated in float32 in that order, as ``docs/semantics.md`` section 7.1
        states: the matrix every kernel multiplies by.

        Returns
        -------
        numpy.ndarray of float32
            Shape ``(out_features, in_features)``; a new array on every call.

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu import lutgemm
        >>> W = np.linspace(-1, 1, 128, dtype=np.float32).reshape(4, 32)
        >>> Wq = lutgemm.quantize_weights(W, bits=4, group_size=16)
        >>> D = Wq.dequantize()
        >>> D.shape, D.dtype
        ((4, 32), dtype('float32'))
        >>> bool(np.abs(D - W).max() < 1e-6)      # 16 evenly spaced weights a group: 16 levels fit them
        True
        """
        out = np.empty(self.shape, np.float32)
        _core.bcq_dequantize(*self._args(), out)
        return out

    @classmethod
    def from_uniform(cls, codes, scale, zero_point, group_size=128, bits=None) -> BCQMatrix:
        """Exact BCQ form of a uniform asymmetric quantization ``w = scale * (codes - zero_point)``.

        With ``alpha_i = scale/2 * 2**i``, ``b_i = 2*bit_i(codes) - 1``
        and offset ``scale/2 * (2**bits - 1) - scale*zero_point`` (docs/semantics.md, section 7.1).  In
        float32 the result is bit-exact whenever ``scale`` has at most 20 significant
        bits and ``zero_point`` is an integer in ``0..2**bits-1`` (what
        ``method="uniform"`` produces); otherwise exact up to float32 rounding.
        For codes made elsewhere (GPTQ/AWQ-style checkpoints) or by
        :func:`uniform_quantize`.

        Parameters
        ----------
        codes : array_like of int
            Integer codes in ``0..2**bits-1``, shape ``(out, in)``.
        scale : array_like of float
            Shape ``(out, groups)`` with ``groups = ceil(in / group_size)``.
        zero_point : array_like of float
            Shape ``(out, groups)``.
        group_size : int or None, default 128
            Columns per group, a positive multiple of 8, or ``None`` for one
            group per row.
        bits : int, optional
            Bit-planes, 1..4; defaults to the smallest width holding
            ``codes.max()``.

        Returns
        -------
        BCQMatrix
            With ``method="uniform"``.

        Raises
        ------
        TypeError
            If ``codes`` is not an integer array, or ``bits``/``group_size`` is
            not an int.
        ValueError
            If ``codes`` is not 2-D or leaves ``0..2**bits-1``, ``bits`` is not in
            1..4, ``group_size`` is not a positive multiple of 8, or ``scale`` or
            ``zero_point`` does not have shape ``(out, groups)``.

        See Also
        --------
        uniform_quantize : makes ``(codes, scale, zero_point)`` from float weights.

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu import lutgemm
        >>> codes = np.array([[0, 1, 2, 3, 3, 2, 1, 0]])
        >>> scale, zero_point = np.array([[0.5]]), np.array([[1.0]])
        >>> Wq = lutgemm.BCQMatrix.from_uniform(codes, scale, zero_point, group_size=8)
        >>> Wq.bits, Wq.dequantize()                # 0.5 * (codes - 1)
        (2, array([[-0.5,  0. ,  0.5,  1. ,  1. ,  0.5,  0. , -0.5]], dtype=float32))
        """
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":  # a wrong dtype is a wrong type (docs/errors.md)
            raise TypeError(f"codes must be an integer array, got dtype {codes.dtype}")
        if codes.ndim != 2:
            raise ValueError(f"codes must be a 2-D integer array, got shape {codes.shape}")
        top = int(codes.max()) if codes.size else 0
        if bits is None:
            bits = max(1, top.bit_length())
        bits = _check_bits(bits)
        if codes.size and (int(codes.min()) < 0 or top > 2 ** bits - 1):
            raise ValueError(f"codes must lie in 0..{2 ** bits - 1}")
        return _from_uniform(codes, np.asarray(scale, np.float64),
                             np.asarray(zero_point, np.float64), bits, group_size)

    @classmethod
    def from_gguf(cls, tensor, ggml_type=None, shape=None):
        """Exact BCQ form of a GGUF tensor stored in a "scale x integer (+ min)" block format.

        ``tensor``: a ``gguf.ReaderTensor`` (from ``gguf.GGUFReader(path).tensors``), or the raw
        block bytes (uint8 array or bytes-like) together with ``ggml_type`` (a ggml type number,
        a ``gguf.GGMLQuantizationType`` or a name such as ``"Q4_1"``) and ``shape``
        ``(out_features, in_features)`` in NumPy order (the file lists it reversed).

        Formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32 weights per block) and the K-quants Q2_K,
        Q3_K, Q4_K, Q5_K, Q6_K (256 per super-block).  Each sub-block (32 weights, or 16 for
        Q2_K, Q3_K and Q6_K; the group size of the result) is ``w = s * u + c`` with ``u`` an
        unsigned q-bit integer, which is BCQ with ``alpha_i = s * 2**(i-1)``, ``b_i = 2*bit_i(u) - 1``
        and offset ``c + s * (2**q - 1) / 2``.  The codes are the file's own bits: nothing is
        dequantized or re-fitted.  The kernels hold at most 4 bit-planes, so a format with
        q <= 4 gives a :class:`BCQMatrix`, and Q5_0, Q5_1, Q5_K, Q6_K and Q8_0 give a
        :class:`BCQStack` of two matrices (bit-planes 0-3 and the rest).

        ``dequantize()`` of the result equals ``gguf.quants.dequantize`` of the same blocks
        bit for bit for the formats without a min (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K); for Q4_1,
        Q5_1, Q2_K, Q4_K and Q5_K the offset ``min + s*(2**q-1)/2`` is rounded to float32, so
        a weight may differ by an ulp or two (float32 rounding; the SmolLM2 Q4_1 file imports
        bit for bit).

        Parameters
        ----------
        tensor : gguf.ReaderTensor, numpy.ndarray of uint8 or bytes-like
            A tensor read by ``gguf.GGUFReader`` (its type and shape are taken
            from it), or the raw block bytes of one 2-D tensor.
        ggml_type : int, gguf.GGMLQuantizationType or str, optional
            The block format of raw bytes (required with them, refused with a
            ``ReaderTensor``): a ggml type number (2 = Q4_0, 3 = Q4_1, ...), the
            enum, or a name such as ``"Q4_1"`` (any case).
        shape : tuple of 2 ints, optional
            ``(out_features, in_features)`` of raw bytes (required with them,
            refused with a ``ReaderTensor``); ``in_features`` must be a whole
            number of blocks (32 or 256 weights).

        Returns
        -------
        BCQMatrix or BCQStack
            A ``BCQMatrix`` for formats of at most 4 bits (Q4_0, Q4_1, Q2_K,
            Q3_K, Q4_K), a two-part ``BCQStack`` for the wider ones, with the
            sub-block as group size and ``method="gguf-<format>"``.

        Raises
        ------
        TypeError
            If raw bytes come without ``ggml_type`` and ``shape``, ``tensor`` is
            neither a ``ReaderTensor`` nor uint8 bytes, ``ggml_type`` is of
            another type, or ``shape`` is not integers.
        ValueError
            If ``ggml_type`` names a format that is not a "scale x integer" block
            format (e.g. F16, IQ-quants), ``ggml_type``/``shape`` come with a
            ``ReaderTensor``, ``shape`` is not 2-D and positive or not a whole
            number of blocks, the byte count does not match ``shape``, or a
            block holds a non-finite scale or min.

        See Also
        --------
        exaq_cpu.llama : loads whole GGUF models with these weights.

        Examples
        --------
        One Q4_0 block (a float16 scale ``d``, then 32 4-bit codes ``u`` two to a
        byte, ``w = d * (u - 8)``), built by hand:

        >>> import numpy as np
        >>> from exaq_cpu import lutgemm
        >>> u = np.arange(32) % 16
        >>> block = np.concatenate([np.float16(0.5).reshape(1).view(np.uint8),
        ...                         (u[:16] | (u[16:] << 4)).astype(np.uint8)])
        >>> Wq = lutgemm.BCQMatrix.from_gguf(block, "Q4_0", (1, 32))
        >>> Wq
        BCQMatrix(shape=(1, 32), bits=4, group_size=32, method='gguf-Q4_0', nbytes=576)
        >>> bool(np.array_equal(Wq.dequantize()[0], 0.5 * (u - 8)))
        True

        An 8-bit Q8_0 block becomes a stack of two 4-plane matrices:

        >>> q = np.arange(-16, 16, dtype=np.int8)
        >>> block8 = np.concatenate([np.float16(0.25).reshape(1).view(np.uint8), q.view(np.uint8)])
        >>> Ws = lutgemm.BCQMatrix.from_gguf(block8.tobytes(), "Q8_0", (1, 32))
        >>> type(Ws).__name__, [part.bits for part in Ws.parts]
        ('BCQStack', [4, 4])
        >>> bool(np.array_equal(Ws.dequantize()[0], 0.25 * q))
        True
        """
        from . import _gguf_blocks

        fmt, blocks, rows, cols = _gguf_input(tensor, ggml_type, shape)
        n_sub = cols // fmt.sub_size
        u = np.empty((rows, cols), np.uint8)
        step = np.empty((rows, n_sub), np.float64)
        zero = np.empty((rows, n_sub), np.float64)
        per_row = cols // fmt.block_size
        chunk = max(1, (1 << 20) // cols)  # rows decoded at a time: bounded temporaries
        for r0 in range(0, rows, chunk):
            r1 = min(rows, r0 + chunk)
            bu, bs, bc = _gguf_blocks.decode_blocks(fmt, blocks[r0 * per_row:r1 * per_row])
            u[r0:r1] = bu.reshape(r1 - r0, cols)
            step[r0:r1] = bs.reshape(r1 - r0, n_sub)
            zero[r0:r1] = bc.reshape(r1 - r0, n_sub)
        if not (np.isfinite(step).all() and np.isfinite(zero).all()):
            raise ValueError(f"tensor ({fmt.name} blocks) holds non-finite float16 scales or mins")
        q = fmt.bits
        offset = zero + step * ((2 ** q - 1) / 2.0)  # exact in float64; rounded once to float32
        method = f"gguf-{fmt.name}"
        if q <= _MAX_PLANES:
            return _pack_codes(u, step, offset, (rows, cols), q, fmt.sub_size, method)
        parts = []
        for lo in range(0, q, _MAX_PLANES):
            width = min(_MAX_PLANES, q - lo)
            codes = (u >> lo) & ((1 << width) - 1)
            parts.append(_pack_codes(codes, step * 2.0 ** lo, offset if lo == 0 else np.zeros_like(offset),
                                     (rows, cols), width, fmt.sub_size, method))
        return BCQStack(parts, method=method)

    # -- persistence ------------------------------------------------------
    def save(self, path) -> None:
        """Write to ``path`` (``.npz``, uncompressed).

        Parameters
        ----------
        path : str, os.PathLike or file object
            As for ``numpy.savez``: a path (``.npz`` is appended when missing)
            or a writable binary file.

        See Also
        --------
        load : reads it back.

        Examples
        --------
        >>> import io
        >>> import numpy as np
        >>> from exaq_cpu import lutgemm
        >>> Wq = lutgemm.quantize_weights(np.eye(8, dtype=np.float32), bits=1, group_size=8)
        >>> buffer = io.BytesIO()
        >>> Wq.save(buffer)
        >>> _ = buffer.seek(0)
        >>> back = lutgemm.BCQMatrix.load(buffer)
        >>> back
        BCQMatrix(shape=(8, 8), bits=1, group_size=8, method='alternating', nbytes=144)
        >>> bool(np.array_equal(back.dequantize(), Wq.dequantize()))
        True
        """
        np.savez(path, planes=self.planes, alphas=self.alphas, offsets=self.offsets,
                 shape=np.array(self.shape, np.int64), bits=np.int64(self.bits),
                 group_size=np.int64(-1 if self.group_size is None else self.group_size),
                 method=np.array("" if self.method is None else self.method),
                 format=np.array("exaq_cpu.BCQMatrix/1"))

    @classmethod
    def load(cls, path) -> BCQMatrix:
        """Read a file written by :meth:`save`; ``ValueError`` if it is not a valid one.

        Safe on untrusted files: every member's header (dtype, shape, byte count) is checked
        against ``shape``/``bits``/``group_size`` before its bytes are read; nothing is unpickled.

        Parameters
        ----------
        path : str, os.PathLike or file object
            A path or a readable, seekable binary file holding the archive.

        Returns
        -------
        BCQMatrix

        Raises
        ------
        ValueError
            If it is not a saved ``BCQMatrix`` (not a zip archive, another
            format tag, missing members, fields out of range, arrays whose
            dtype or size disagree with ``shape``/``bits``/``group_size``).
        FileNotFoundError
            If the path does not exist.

        Examples
        --------
        >>> import io
        >>> from exaq_cpu import lutgemm
        >>> lutgemm.BCQMatrix.load(io.BytesIO(b"not an archive"))
        Traceback (most recent call last):
            ...
        ValueError: not a saved BCQMatrix: ...

        See :meth:`save` for a round trip.
        """
        with NpzReader(path, "a saved BCQMatrix") as z:
            if z.text("format") != "exaq_cpu.BCQMatrix/1":
                raise ValueError(f"{path!r} is not a saved BCQMatrix")
            shape = z.array("shape", kinds="iu", shape=(2,))
            rows, cols = (int(v) for v in shape)
            if rows < 1 or cols < 1 or rows > 1 << 31 or cols > 1 << 31:
                raise ValueError(f"a saved BCQMatrix: field 'shape' is invalid: {shape.tolist()}")
            bits = z.scalar_int("bits", 1, 4)
            gs = z.scalar_int("group_size", -1, 1 << 31)
            group_size = None if gs == -1 else gs
            gs_eff = _effective_group(cols, group_size)
            method = z.text("method") or None
            tiles, groups = -(-rows // TILE), -(-cols // gs_eff)
            planes = z.array("planes", np.uint8, shape=(tiles * groups * bits * (gs_eff // 8) * TILE,))
            alphas = z.array("alphas", np.float32, shape=(tiles * groups * bits * TILE,))
            offsets = z.array("offsets", np.float32, shape=(tiles * groups * TILE,))
        return cls(planes, alphas, offsets, (rows, cols), bits, group_size, method)

    def __reduce__(self):
        return (BCQMatrix, (self.planes, self.alphas, self.offsets, self.shape, self.bits,
                            self.group_size, self.method))

    def __repr__(self):
        return (f"BCQMatrix(shape={self.shape}, bits={self.bits}, group_size={self.group_size}, "
                f"method={self.method!r}, nbytes={self.nbytes})")


class BCQStack:
    """A weight matrix held as the sum of BCQ matrices of one shape and group size.

    What :meth:`BCQMatrix.from_gguf` returns for block formats whose codes are wider than the
    kernels' 4 bit-planes (Q5_0, Q5_1, Q5_K, Q6_K, Q8_0): ``parts[0]`` holds bit-planes 0-3
    and the offset, ``parts[1]`` the higher planes.  Since BCQ is a sum over bit-planes the split
    is exact.  ``lut_gemm`` accepts it wherever it accepts a :class:`BCQMatrix` (one LUT pass
    per part, or one dequantization and one matmul from ``BATCH_CROSSOVER[4]`` tokens on);
    ``dequantize()`` adds the parts' float32 weights in order.  ``bits`` is the total code width.
    Pickling works; ``save``/``load`` are not provided (save the parts).

    Parameters
    ----------
    parts : sequence of BCQMatrix
        At least one matrix; all of one ``shape`` and one (effective) group size.
    method : str, optional
        A free label (``from_gguf`` puts ``"gguf-<format>"``).

    Attributes
    ----------
    parts : tuple of BCQMatrix
        As given.
    shape : tuple of int
        ``(out_features, in_features)``, shared by the parts.
    bits : int
        The sum of the parts' bits.
    group_size : int or None
        The first part's.
    method : str or None
        As given.

    Raises
    ------
    TypeError
        If ``parts`` is empty or holds anything but ``BCQMatrix``.
    ValueError
        If the parts differ in shape or group size.

    See Also
    --------
    BCQMatrix.from_gguf : makes one for Q5_0, Q5_1, Q5_K, Q6_K and Q8_0 blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> W = np.array([[-1.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]], np.float32)
    >>> Wq = lutgemm.quantize_weights(W, bits=2, group_size=8, method="uniform")
    >>> S = lutgemm.BCQStack([Wq, Wq])
    >>> S
    BCQStack(shape=(1, 8), bits=4, group_size=8, parts=2, method=None, nbytes=448)
    >>> S.dequantize()                            # 2 * W
    array([[-2.,  0.,  2.,  4.,  4.,  2.,  0., -2.]], dtype=float32)
    >>> lutgemm.lut_gemm(np.ones(8, np.float32), S, precision="exact")   # sum of 2 * W
    array([8.], dtype=float32)
    """

    def __init__(self, parts, method=None):
        parts = tuple(parts)
        if not parts or not all(isinstance(p, BCQMatrix) for p in parts):
            raise TypeError("parts must be a non-empty sequence of BCQMatrix")
        first = parts[0]
        for p in parts[1:]:
            if p.shape != first.shape or p._gs != first._gs:
                raise ValueError("parts must share shape and group_size")
        self.parts = parts
        self.shape = first.shape
        self.group_size = first.group_size
        self.bits = sum(p.bits for p in parts)
        self.method = method

    @property
    def in_features(self) -> int:
        """Columns of the matrix, ``shape[1]`` (int)."""
        return self.shape[1]

    @property
    def out_features(self) -> int:
        """Rows of the matrix, ``shape[0]`` (int)."""
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of all parts (bit-planes plus float32 alphas and offsets), an int."""
        return sum(p.nbytes for p in self.parts)

    def dequantize(self) -> np.ndarray:
        """The float32 weights: the parts' ``dequantize()`` added in order (float32).

        Returns
        -------
        numpy.ndarray of float32
            Shape ``(out_features, in_features)``.

        See the class examples.
        """
        out = self.parts[0].dequantize()
        for p in self.parts[1:]:
            out += p.dequantize()
        return out

    def __reduce__(self):
        return (BCQStack, (self.parts, self.method))

    def __repr__(self):
        return (f"BCQStack(shape={self.shape}, bits={self.bits}, group_size={self.group_size}, "
                f"parts={len(self.parts)}, method={self.method!r}, nbytes={self.nbytes})")


_MAX_PLANES = 4  # bit-planes the kernels take per matrix (EXAQ_LUT_MAX_BITS)
_PACK_ROWS = 1024  # rows packed at a time, to bound temporaries


def _gguf_input(tensor, ggml_type, shape):
    """Validate the arguments of BCQMatrix.from_gguf: (format, (n_blocks, type_size) uint8 blocks, rows, cols)."""
    from . import _gguf_blocks

    if hasattr(tensor, "tensor_type") and hasattr(tensor, "data") and hasattr(tensor, "shape"):
        if ggml_type is not None or shape is not None:
            raise ValueError("ggml_type and shape are taken from a gguf.ReaderTensor; pass them only with raw bytes")
        ggml_type = tensor.tensor_type
        dims = [int(v) for v in np.asarray(tensor.shape).reshape(-1)]
        shape = tuple(reversed(dims))  # the file lists ne0 (the row length) first
        what = f"tensor {getattr(tensor, 'name', '')!r}"
        data = tensor.data
    else:
        if ggml_type is None or shape is None:
            raise TypeError("with raw block bytes, ggml_type and shape (out_features, in_features) are required")
        what = "tensor"
        data = tensor
    fmt = _gguf_blocks.resolve_type(ggml_type)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, np.uint8)
    if not isinstance(data, np.ndarray):
        raise TypeError(f"tensor must be a gguf.ReaderTensor, a uint8 array or bytes, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise TypeError(f"tensor data must be uint8 block bytes, got dtype {data.dtype}")
    try:
        dims = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be (out_features, in_features) integers, got {shape!r}") from None
    if len(dims) != 2 or min(dims) <= 0:
        raise ValueError(f"shape must be a 2-D (out_features, in_features) of positive sizes, got {dims} ({what})")
    rows, cols = dims
    if cols % fmt.block_size:
        raise ValueError(f"shape: in_features {cols} is not a multiple of the {fmt.name} block size "
                         f"{fmt.block_size} ({what})")
    n_blocks = rows * (cols // fmt.block_size)
    if data.size != n_blocks * fmt.type_size:
        raise ValueError(f"tensor data holds {data.size} bytes; shape {dims} in {fmt.name} needs "
                         f"{n_blocks * fmt.type_size} ({what})")
    blocks = np.ascontiguousarray(data).reshape(n_blocks, fmt.type_size)
    return fmt, blocks, rows, cols


def _pack_codes(u, step, offset, shape, bits, gs, method):
    """Integer codes u (rows, cols) of ``bits`` bits, step and offset (rows, groups) ->
    BCQMatrix with alpha_i = step * 2**(i-1), b_i = 2*bit_i(u) - 1 (layout of c/lutgemm.h).
    ``cols`` must be a multiple of ``gs``."""
    rows, cols = shape
    groups, gb = cols // gs, gs // 8
    tiles = -(-rows // TILE)
    planes = np.zeros((tiles, groups, bits, gb, TILE), np.uint8)
    alphas = np.zeros((tiles * TILE, groups, bits), np.float32)
    offsets = np.zeros((tiles * TILE, groups), np.float32)
    alphas[:rows] = step[..., None] * (0.5 * 2.0 ** np.arange(bits))
    offsets[:rows] = offset
    for r0 in range(0, rows, _PACK_ROWS):  # _PACK_ROWS is a multiple of TILE
        r1 = min(rows, r0 + _PACK_ROWS)
        t0, t1 = r0 // TILE, -(-r1 // TILE)
        U = np.zeros(((t1 - t0) * TILE, groups, gb, 8), np.uint8)
        U[:r1 - r0] = u[r0:r1].reshape(r1 - r0, groups, gb, 8)
        for i in range(bits):
            byte = np.packbits((U >> i) & 1, axis=-1, bitorder="little")[..., 0]  # (R, groups, gb)
            planes[t0:t1, :, i] = byte.reshape(t1 - t0, TILE, groups, gb).transpose(0, 2, 3, 1)
    Al = alphas.reshape(tiles, TILE, groups, bits).transpose(0, 2, 3, 1)
    Of = offsets.reshape(tiles, TILE, groups).transpose(0, 2, 1)
    return BCQMatrix(planes, Al, Of, shape, bits, gs, method)


# ---------------------------------------------------------------------------
# quantization

def _effective_group(cols, group_size):
    if group_size is None:
        return max(8, -(-cols // 8) * 8)  # one group per row, rounded up to whole bytes
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise TypeError(f"group_size must be an int (a positive multiple of 8) or None, got {group_size!r}")
    if group_size <= 0 or group_size % 8:
        raise ValueError(f"group_size must be a positive multiple of 8 or None, got {group_size!r}")
    return int(group_size)


def _check_threads(threads):
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):  # docs/errors.md
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")


def _check_bits(bits):
    return check_bits(bits, 1, 4)  # BCQ planes: 1..4 (docs/errors.md)


def _grouped(W, gs):
    """(rows, groups, gs) float64 view of W zero padded, and the mask of real columns."""
    rows, cols = W.shape
    groups = -(-cols // gs)
    Wp = np.zeros((rows, groups * gs), np.float64)
    Wp[:, :cols] = W
    mask = np.zeros(groups * gs, bool)
    mask[:cols] = True
    return Wp.reshape(rows, groups, gs), mask.reshape(groups, gs)


def _fit_greedy(w, m, bits):
    """Offset = group mean, then each bit-plane takes the sign of the residual and
    alpha = mean |residual| (the L2-optimal alpha for that sign pattern)."""
    cnt = np.maximum(m.sum(-1), 1)
    z = (w * m).sum(-1) / cnt
    r = (w - z[..., None]) * m
    B = np.empty(w.shape[:2] + (bits, w.shape[2]), bool)
    A = np.empty(w.shape[:2] + (bits,), np.float64)
    for i in range(bits):
        B[:, :, i] = r >= 0
        A[:, :, i] = np.abs(r).sum(-1) / cnt
        r = (r - np.where(B[:, :, i], A[:, :, i, None], -A[:, :, i, None])) * m
    return B, A, z


def _signs(B):
    """+-1 as float32 (exact; halves the memory traffic of the float64 fit)."""
    S = B.astype(np.float32)
    S *= 2.0
    S -= 1.0
    return S


def _reconstruct(B, A, z):
    return np.einsum("rgib,rgi->rgb", _signs(B), A) + z[..., None]


def _group_sse(w, m, B, A, z):
    return (((_reconstruct(B, A, z) - w) * m) ** 2).sum(-1)


def _refit_scales(w, m, B):
    """Least-squares alphas and offset for fixed sign patterns, from the normal
    equations assembled blockwise (signs x signs, signs x mask, count); a tiny
    ridge keeps groups with repeated or constant patterns solvable."""
    bits = B.shape[2]
    S = _signs(B)
    if not m.all():
        S *= m[:, None, :]  # padding columns drop out of every sum
    wm = w * m
    G = np.empty(B.shape[:2] + (bits + 1, bits + 1))
    G[..., :bits, :bits] = np.einsum("rgik,rgjk->rgij", S, S)
    G[..., :bits, bits] = G[..., bits, :bits] = S.sum(-1)
    G[..., bits, bits] = m.sum(-1)
    rhs = np.empty(B.shape[:2] + (bits + 1,))
    rhs[..., :bits] = np.einsum("rgik,rgk->rgi", S, wm)
    rhs[..., bits] = wm.sum(-1)
    G += np.eye(bits + 1) * (1e-9 * (np.trace(G, axis1=2, axis2=3)[..., None, None] + 1e-30))
    sol = np.linalg.solve(G, rhs[..., None])[..., 0]
    return sol[..., :bits], sol[..., bits]


def _best_codes(w, A, z):
    """For fixed alphas and offset, the nearest of the 2^bits levels for every weight."""
    bits = A.shape[2]
    combos = ((np.arange(2 ** bits)[:, None] >> np.arange(bits)) & 1).astype(bool)  # (C, bits)
    levels = np.einsum("ci,rgi->rgc", np.where(combos, 1.0, -1.0), A) + z[..., None]
    order = np.argsort(levels, -1)
    srt = np.take_along_axis(levels, order, -1)
    mids = 0.5 * (srt[..., 1:] + srt[..., :-1])
    pos = np.zeros(w.shape, np.uint8)  # rank of w among the levels: count of midpoints below it
    for c in range(mids.shape[-1]):
        pos += w > mids[..., c, None]
    code = np.take_along_axis(order.astype(np.uint8), pos.astype(np.intp), -1)
    return ((code[:, :, None, :] >> np.arange(bits, dtype=np.uint8)[None, None, :, None]) & 1).astype(bool)


def _group_maxerr(w, m, B, A, z):
    return (np.abs(_reconstruct(B, A, z) - w) * m).max(-1)


def _fit_alternating(w, m, bits, iters, init=None, cap=None):
    """Xu et al. 2018: start from ``init`` (B, A, z) (default: greedy), then alternate
    (least-squares alphas and offset given the codes; best codes given alphas and offset).
    Each step can only lower the error; a group keeps its previous fit if rounding says
    otherwise, or if the step would leave a weight further than ``cap`` (per group) from
    its reconstruction.  Returns (B, A, z, err)."""
    B, A, z = _fit_greedy(w, m, bits) if init is None else init
    err = _group_sse(w, m, B, A, z)
    for _ in range(iters):
        A2, z2 = _refit_scales(w, m, B)
        B2 = _best_codes(w, A2, z2)
        err2 = _group_sse(w, m, B2, A2, z2)
        better = err2 < err
        if cap is not None:
            better &= _group_maxerr(w, m, B2, A2, z2) <= cap
        if not better.any():
            break
        B = np.where(better[..., None, None], B2, B)
        A = np.where(better[..., None], A2, A)
        z = np.where(better, z2, z)
        err = np.where(better, err2, err)
    return B, A, z, err


def _uniform_fit(W, gs, bits):
    """The ``method="uniform"`` fit of W (rows, cols) as grouped (B, A, z), float64 alphas/offsets
    holding the float32 values the uniform BCQMatrix stores (same arithmetic as _from_uniform)."""
    codes, s, zp = uniform_quantize(W, bits, gs)
    rows, cols = codes.shape
    groups = -(-cols // gs)
    u = np.zeros((rows, groups * gs), np.uint8)
    u[:, :cols] = codes
    u = u.reshape(rows, groups, gs)
    B = ((u[:, :, None, :] >> np.arange(bits, dtype=np.uint8)[None, None, :, None]) & 1).astype(bool)
    s = s.astype(np.float64)
    A = (s[..., None] / 2.0) * 2.0 ** np.arange(bits)
    z = s / 2.0 * (2 ** bits - 1) - s * zp.astype(np.float64)
    return B, A.astype(np.float32).astype(np.float64), z.astype(np.float32).astype(np.float64)


def _group_sse_f32(w, m, B, A, z):
    """Per-group squared error of the weights the kernels see: float32 alphas and offset,
    summed in the order of BCQMatrix.dequantize (planes 0..bits-1, then the offset)."""
    A32, z32 = A.astype(np.float32), z.astype(np.float32)
    acc = np.where(B[:, :, 0], A32[..., 0, None], -A32[..., 0, None])
    for i in range(1, B.shape[2]):
        acc = acc + np.where(B[:, :, i], A32[..., i, None], -A32[..., i, None])
    acc = acc + z32[..., None]
    return (((acc.astype(np.float64) - w) * m) ** 2).sum(-1)


def _fit_best(W, w, m, gs, bits, iters):
    """``method="alternating"``: alternating refinement started from the greedy fit and from the
    round-to-nearest uniform fit, keeping per group the lower squared error, and finally the
    uniform fit itself wherever it is at least as good in float32.  On real LLM weights (heavy
    tails, a few large weights per group) refinement from greedy alone ends in a local minimum
    worse than plain rounding; the uniform start spans the group's whole range.

    Outlier guard: a fit is admitted only if no weight of the group lies further than
    ``OUTLIER_GUARD`` times the uniform fit's largest error from its reconstruction (least
    squares would otherwise trade a group's largest weight for many small gains)."""
    uni = _uniform_fit(W, gs, bits)
    cap = None
    if OUTLIER_GUARD is not None:
        cap = OUTLIER_GUARD * _group_maxerr(w, m, *uni) * (1 + 1e-12) + 1e-300
    Bu, Au, zu, eu = _fit_alternating(w, m, bits, iters, init=uni, cap=cap)
    Bg, Ag, zg, eg = _fit_alternating(w, m, bits, iters, cap=cap)
    take_u = eu <= eg
    if cap is not None:  # the greedy start itself may break the guard
        take_u |= _group_maxerr(w, m, Bg, Ag, zg) > cap
    B = np.where(take_u[..., None, None], Bu, Bg)
    A = np.where(take_u[..., None], Au, Ag)
    z = np.where(take_u, zu, zg)
    keep_uniform = _group_sse_f32(w, m, *uni) <= _group_sse_f32(w, m, B, A, z)
    B = np.where(keep_uniform[..., None, None], uni[0], B)
    A = np.where(keep_uniform[..., None], uni[1], A)
    z = np.where(keep_uniform, uni[2], z)
    return B, A, z


def _round_significand(s, keep=20):
    """s rounded to `keep` significant bits, so that s * (integer < 2^4) and s/2 * (odd < 2^5)
    are exact in float32 and the uniform->BCQ conversion is bit-exact."""
    mant, exp = np.frexp(s)
    return np.ldexp(np.round(mant * 2.0 ** keep) / 2.0 ** keep, exp).astype(np.float32).astype(np.float64)


def uniform_quantize(W, bits=4, group_size=128):
    """Round-to-nearest asymmetric quantization: ``(codes, scale, zero_point)``.

    Per group, the range ``[min(w.min(), 0), max(w.max(), 0)]`` (it always holds
    zero, so the integer zero point lies in ``0..2**bits-1``) is split into
    ``2**bits - 1`` steps; the scale is rounded to 20 significant bits (a relative
    change below 1e-6) so that the BCQ form is bit-exact in float32.  Then
    ``w ~ scale * (codes - zero_point)``.  A group of zeros gets scale 0 and
    every code equal to the zero point (0).

    Parameters
    ----------
    W : array_like of float32 or float64
        The weights, ``(out_features, in_features)``, finite.
    bits : int, default 4
        Code width, 1..4.
    group_size : int or None, default 128
        Columns per group, a positive multiple of 8, or ``None`` for one group
        per row.  The last group may be partial.

    Returns
    -------
    codes : numpy.ndarray of uint8
        ``(out, in)``, in ``0..2**bits-1``.
    scale : numpy.ndarray of float32
        ``(out, groups)``, ``groups = ceil(in / group_size)``.
    zero_point : numpy.ndarray of float32
        ``(out, groups)``, integer values in ``0..2**bits-1``.

    Raises
    ------
    TypeError
        If ``W`` is not float32/float64, or ``bits``/``group_size`` is not an int.
    ValueError
        If ``W`` is not 2-D or holds NaN/infinity, ``bits`` is not in 1..4, or
        ``group_size`` is not a positive multiple of 8.

    See Also
    --------
    BCQMatrix.from_uniform : the exact BCQ form of the result.
    quantize_weights : ``method="uniform"`` does both steps.

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> W = np.array([[-1.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, -1.0]], np.float32)
    >>> codes, scale, zero_point = lutgemm.uniform_quantize(W, bits=2, group_size=8)
    >>> codes, scale, zero_point            # range [-1, 2] in 3 steps of 1
    (array([[0, 1, 2, 3, 3, 2, 1, 0]], dtype=uint8), array([[1.]], dtype=float32), array([[1.]], dtype=float32))
    >>> bool(np.array_equal(scale * (codes - zero_point), W))
    True
    """
    W = _check_weights(W)
    bits = _check_bits(bits)
    gs = _effective_group(W.shape[1], group_size)
    w, m = _grouped(W, gs)
    qmax = 2 ** bits - 1
    lo = np.minimum(np.where(m, w, np.inf).min(-1), 0.0)
    hi = np.maximum(np.where(m, w, -np.inf).max(-1), 0.0)
    s = _round_significand(np.float32((hi - lo) / qmax).astype(np.float64))
    safe = np.where(s > 0, s, 1.0)
    zp = np.where(s > 0, np.clip(np.round(-lo / safe), 0, qmax), 0.0)
    u = np.clip(np.round(w / safe[..., None]) + zp[..., None], 0, qmax)
    u = np.where(s[..., None] > 0, u, zp[..., None])
    codes = u.reshape(W.shape[0], w.shape[1] * gs)[:, :W.shape[1]].astype(np.uint8)
    return codes, s.astype(np.float32), zp.astype(np.float32)


def _from_uniform(codes, scale, zp, bits, group_size):
    rows, cols = codes.shape
    gs = _effective_group(cols, group_size)
    groups = -(-cols // gs)
    if scale.shape != (rows, groups) or zp.shape != (rows, groups):
        raise ValueError(f"scale and zero_point must have shape {(rows, groups)}")
    u = np.zeros((rows, groups * gs), np.int64)
    u[:, :cols] = codes
    u = u.reshape(rows, groups, gs)
    B = ((u[:, :, None, :] >> np.arange(bits)[None, None, :, None]) & 1).astype(bool)
    s = scale.astype(np.float32).astype(np.float64)
    A = (s[..., None] / 2.0) * 2.0 ** np.arange(bits)
    z = s / 2.0 * (2 ** bits - 1) - s * zp
    return _pack(B, A, z, (rows, cols), bits, group_size, "uniform")


def _pack(B, A, z, shape, bits, group_size, method):
    """(rows, groups, bits, gs) codes + (rows, groups, bits) alphas + (rows, groups)
    offsets -> the tile-interleaved layout of c/lutgemm.h."""
    rows = shape[0]
    groups, gs = B.shape[1], B.shape[3]
    tiles = -(-rows // TILE)
    pad = tiles * TILE - rows
    if pad:
        B = np.concatenate([B, np.zeros((pad,) + B.shape[1:], bool)])
        A = np.concatenate([A, np.zeros((pad,) + A.shape[1:])])
        z = np.concatenate([z, np.zeros((pad,) + z.shape[1:])])
    P = np.packbits(B, axis=-1, bitorder="little")  # (Mp, groups, bits, gs/8)
    P = P.reshape(tiles, TILE, groups, bits, gs // 8).transpose(0, 2, 3, 4, 1)
    Al = A.reshape(tiles, TILE, groups, bits).transpose(0, 2, 3, 1)
    Of = z.reshape(tiles, TILE, groups).transpose(0, 2, 1)
    return BCQMatrix(P.astype(np.uint8), Al.astype(np.float32), Of.astype(np.float32), shape,
                     bits, group_size, method)


def _check_weights(W):
    W = np.asarray(W)
    if W.dtype not in (np.float32, np.float64):  # a wrong dtype is a wrong type (docs/errors.md)
        raise TypeError(f"W must be float32 or float64, got dtype {W.dtype}")
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D (out_features, in_features), got shape {W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("W contains NaN or infinity")
    return W


def quantize(W, bits=3, group_size=128, method="alternating", iters=None) -> BCQMatrix:
    """Deprecated name of :func:`quantize_weights` (``exaq_cpu.quantize`` quantizes softmax scores).

    Parameters
    ----------
    W, bits, group_size, method, iters
        As for :func:`quantize_weights` (same order, same defaults).

    Returns
    -------
    BCQMatrix
        What ``quantize_weights(W, bits, group_size, method, iters)`` returns.

    Raises
    ------
    TypeError, ValueError
        As :func:`quantize_weights`.

    Warns
    -----
    DeprecationWarning
        On every call.

    See Also
    --------
    quantize_weights : the current name.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     Wq = lutgemm.quantize(np.ones((2, 8), np.float32), bits=2, group_size=8)
    >>> caught[0].category.__name__, Wq.bits
    ('DeprecationWarning', 2)
    """
    warnings.warn("exaq_cpu.lutgemm.quantize is now quantize_weights (exaq_cpu.quantize quantizes softmax "
                  "scores)", DeprecationWarning, stacklevel=2)
    return quantize_weights(W, bits, group_size, method, iters)


def quantize_weights(W, bits=3, group_size=128, method="alternating", iters=None) -> BCQMatrix:
    """Quantize ``W`` (out_features, in_features; float32/float64) to BCQ.

    The fit runs in float64, 1024 rows at a time; ``docs/lutgemm.md`` compares
    the methods' errors on synthetic and real weights.

    Parameters
    ----------
    W : array_like of float32 or float64
        The weights, ``(out_features, in_features)``, finite.
    bits : int, default 3
        Bit-planes, 1..4.
    group_size : int or None, default 128
        Input columns sharing one set of alphas and one offset; a
        positive multiple of 8 (the kernels read whole bytes), or ``None`` for one
        group per row.  ``in_features`` need not be a multiple of it: the last group
        is padded internally (the padding is excluded from the fit and multiplies
        zero activations).
    method : {"alternating", "greedy", "uniform"}, default "alternating"
        ``"greedy"`` (offset = mean, then sign / mean-|residual| per
        plane), ``"alternating"`` (``iters`` rounds of least-squares alphas+offset
        given codes and nearest codes given alphas, Xu et al. 2018, started from the
        greedy and from the uniform fit; per group the best of the two and of the
        uniform fit itself is kept, so it is never worse than ``"greedy"`` or
        ``"uniform"``; no weight may end further from its reconstruction than
        ``OUTLIER_GUARD`` times the uniform fit's largest error in its group),
        ``"uniform"`` (round-to-nearest asymmetric :func:`uniform_quantize` converted
        exactly to BCQ, docs/semantics.md, section 7.1).
    iters : int, optional
        Alternating rounds (default ``DEFAULT_ITERS`` = 15; stops early when no
        group improves); ignored by the other methods.

    Returns
    -------
    BCQMatrix
        ``shape == W.shape``, with ``method`` recorded.

    Raises
    ------
    TypeError
        If ``W`` is not float32/float64, or ``bits``/``group_size`` is not an int.
    ValueError
        If ``W`` is not 2-D or holds NaN/infinity, ``bits`` is not in 1..4,
        ``group_size`` is not a positive multiple of 8, ``method`` is unknown, or
        ``iters`` is not a non-negative integer.

    See Also
    --------
    lut_gemm : multiply by the result.
    uniform_quantize, BCQMatrix.from_uniform, BCQMatrix.from_gguf

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> W = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    >>> Wq = lutgemm.quantize_weights(W, bits=3, group_size=32)
    >>> Wq
    BCQMatrix(shape=(32, 64), bits=3, group_size=32, method='alternating', nbytes=1792)
    >>> def error(Wq):                     # relative Frobenius error
    ...     return float(np.linalg.norm(Wq.dequantize() - W) / np.linalg.norm(W))
    >>> uniform = lutgemm.quantize_weights(W, 3, 32, method="uniform")
    >>> greedy = lutgemm.quantize_weights(W, 3, 32, method="greedy")
    >>> error(Wq) <= min(error(uniform), error(greedy)), error(Wq) < 0.2   # about 0.15 here
    (True, True)
    """
    W = _check_weights(W)
    bits = _check_bits(bits)
    gs = _effective_group(W.shape[1], group_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if iters is None:
        iters = DEFAULT_ITERS
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    if method == "uniform":
        codes, s, zp = uniform_quantize(W, bits, group_size)
        return _from_uniform(codes, s.astype(np.float64), zp.astype(np.float64), bits, group_size)
    rows, cols = W.shape
    groups = -(-cols // gs) if cols else 0
    B = np.zeros((rows, groups, bits, gs), bool)
    A = np.zeros((rows, groups, bits))
    z = np.zeros((rows, groups))
    for r0 in range(0, rows, _ROW_CHUNK):
        w, m = _grouped(W[r0:r0 + _ROW_CHUNK], gs)
        if method == "greedy":
            fit = _fit_greedy(w, m, bits)
        else:
            fit = _fit_best(W[r0:r0 + _ROW_CHUNK], w, m, gs, bits, int(iters))
        B[r0:r0 + _ROW_CHUNK], A[r0:r0 + _ROW_CHUNK], z[r0:r0 + _ROW_CHUNK] = fit
    return _pack(B, A, z, (rows, cols), bits, group_size, method)


# ---------------------------------------------------------------------------
# multiplication

_LUT_METHODS = ("auto", "lut", "dequantize")
_TABLES = ("auto", "mu4", "mu8")
PRECISIONS = ("int8", "exact")
#: ``lut_gemm``'s default ``precision``; ``EXAQ_CPU_LUT_PRECISION=exact`` switches a whole
#: program (e.g. ``python -m exaq_cpu.llama eval --linear bcq``) to the float tables.
DEFAULT_PRECISION = "int8"


def lut_gemm(x, Wq: BCQMatrix, *positional, out=None, threads=None, method="auto", table="auto", precision=None,
             backend=None):
    """``x @ Wq.dequantize().T`` without dequantizing: (..., in_features) -> (..., out_features).

    For each run of 4 activations the 16 signed partial sums are built once
    and every 4-bit nibble of a bit-plane picks one (``docs/semantics.md``
    section 7.3, ``docs/lutgemm.md``).

    Parameters
    ----------
    x : array_like of float or torch.Tensor
        float16/32/64 activations of shape ``(..., in_features)``, any leading
        shape (one token = GEMV is the main case); computed in float32.  A CPU
        tensor gives a tensor.
    Wq : BCQMatrix or BCQStack
        The weights; a stack runs one LUT pass per part and adds them.
    *positional
        Deprecated: ``out`` and ``threads`` by position (a
        ``DeprecationWarning``); pass them by keyword.
    out : numpy.ndarray or torch.Tensor, optional
        A C-contiguous float32 array of the result shape, written and returned.
    threads : int or None, default None
        Threads of the library's one persistent worker pool (shared
        with the softmax; no thread is made per call) that split the row tiles;
        ``None``: every core, but only for products of at least 512K
        weights x tokens per thread, so small layers stay on the caller.  The
        result does not depend on it.  A call that finds the pool busy (another
        Python thread's) runs on its own thread alone, so concurrent callers never
        oversubscribe the cores.  The GIL is released while the kernel runs.
    method : {"auto", "lut", "dequantize"}, default "auto"
        ``"lut"`` (table lookups), ``"dequantize"`` (dequantize, then
        NumPy/BLAS matmul), or ``"auto"``: LUT below ``BATCH_CROSSOVER[bits]`` tokens,
        dequantize+BLAS from there on (where the BLAS matmul's reuse of each
        weight across tokens outweighs the cost of dequantizing).
    table : {"auto", "mu4", "mu8"}, default "auto"
        For ``precision="exact"``: ``"mu4"`` (16-entry tables, vpermps),
        ``"mu8"`` (256-entry, the paper's), or ``"auto"`` (the active backend's
        faster design, :func:`preferred_table`).  Naming ``"mu4"``/``"mu8"``
        without ``precision`` means ``"exact"``; ``precision="int8"`` has one
        design and takes only ``"auto"``.
    precision : {"int8", "exact"} or None, default None
        ``None`` means ``DEFAULT_PRECISION`` (``"int8"`` unless
        ``EXAQ_CPU_LUT_PRECISION`` says otherwise), or ``"exact"`` when
        ``table`` names a design.  ``"int8"``: the 16 partial sums
        of every 4 activations are quantized to int8 with one scale per weight group,
        looked up with byte shuffles and summed exactly in integers; the result
        differs from ``x @ Wq.dequantize().T`` by the table rounding (~1% relative
        for Gaussian activations; worst case per row ``sum_g s_g * group_size/8 *
        sum_i |alpha_i|`` with ``s_g`` = largest ``|x0|+|x1|+|x2|+|x3|`` of the group / 127,
        docs/lutgemm.md) and is bit-identical on every backend.  ``"exact"``: float32
        tables, equal to ``x @ Wq.dequantize().T`` up to float32 rounding.
        Both only concern ``"lut"``: the dequantize path is always float32.
    backend : str or None, default None
        A backend name (``exaq_cpu.backends()``) for this call only, as
        inside ``with exaq_cpu.use_backend(backend):``; ``None``: the thread's or
        process's choice.  ``precision="int8"`` gives the same bits on every backend.

    Returns
    -------
    numpy.ndarray of float32 or torch.Tensor
        ``(..., out_features)``; ``out`` itself when given; a tensor when ``x``
        or ``out`` is one.

    Raises
    ------
    TypeError
        If ``Wq`` is not a ``BCQMatrix``/``BCQStack``, ``x`` is not a float
        array, ``out`` is not a float32 numpy array, ``threads`` is not an int,
        or more than two positional arguments follow ``Wq`` (or ``out``/``threads``
        come both by position and by keyword).
    ValueError
        If ``x`` is not ``(..., in_features)``, ``out`` has another shape or is
        not C-contiguous (or, as a tensor, requires grad), ``threads < 1``,
        ``method``, ``table`` or ``precision`` is unknown, ``table`` names a
        design with ``precision="int8"``, or ``backend`` is unknown or
        unavailable.

    See Also
    --------
    quantize_weights : makes ``Wq``.
    preferred_table : the design ``table="auto"`` picks.

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import lutgemm
    >>> rng = np.random.default_rng(0)
    >>> Wq = lutgemm.quantize_weights(rng.standard_normal((32, 64)).astype(np.float32), bits=3, group_size=32)
    >>> x = rng.standard_normal(64).astype(np.float32)
    >>> reference = x @ Wq.dequantize().T
    >>> y = lutgemm.lut_gemm(x, Wq, precision="exact")
    >>> y.shape, y.dtype, bool(np.allclose(y, reference, rtol=1e-5, atol=1e-4))
    ((32,), dtype('float32'), True)
    >>> y8 = lutgemm.lut_gemm(x, Wq)                    # int8 tables: ~1% off
    >>> bool(np.abs(y8 - reference).max() < 0.05 * np.abs(reference).max())
    True
    >>> lutgemm.lut_gemm(np.ones((2, 3, 64), np.float32), Wq).shape   # a batch of 6 tokens
    (2, 3, 32)
    """
    if (type(x) is np.ndarray and type(Wq) is BCQMatrix and out is None and not positional and backend is None
            and method == "auto" and table == "auto" and (precision or DEFAULT_PRECISION) == "int8"):
        y = _lut_gemm_i8_ready(x, Wq, threads)  # the decode loop's call, with no Python in between
        if y is not None:
            return y
    if positional:  # out and threads were positional before 0.1 settled on keywords (docs/api.md)
        if len(positional) > 2:
            raise TypeError(f"lut_gemm takes 2 positional arguments (x, Wq), got {2 + len(positional)}")
        warnings.warn("lut_gemm(x, Wq, out, threads): pass out= and threads= by keyword", DeprecationWarning,
                      stacklevel=2)
        if out is not None or (len(positional) > 1 and threads is not None):
            raise TypeError("lut_gemm got out/threads both by position and by keyword")
        out = positional[0]
        threads = positional[1] if len(positional) > 1 else threads
    if backend is not None:
        with call_backend(backend):
            return lut_gemm(x, Wq, out=out, threads=threads, method=method, table=table, precision=precision)
    if _torch.any_tensor(x, out):  # CPU tensors: NumPy views in, a tensor out
        if _torch.is_tensor(out) and out.requires_grad:
            raise ValueError("out must not require grad (the kernel writes it in place, outside autograd)")
        xs = _torch.to_numpy(x) if _torch.is_tensor(x) else x
        view = _torch.to_numpy(out, "out", writable=True) if _torch.is_tensor(out) else out
        result = lut_gemm(xs, Wq, out=view, threads=threads, method=method, table=table, precision=precision)
        return out if _torch.is_tensor(out) else _torch.from_numpy(result)
    if isinstance(Wq, BCQStack):
        return _lut_gemm_stack(x, Wq, out, threads, method, table, precision)
    if not isinstance(Wq, BCQMatrix):
        raise TypeError(f"Wq must be a BCQMatrix or BCQStack, got {type(Wq).__name__}")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")  # docs/errors.md
    rows, cols = Wq.shape
    if x.ndim < 1 or x.shape[-1] != cols:
        raise ValueError(f"x must have shape (..., {cols}), got {x.shape}")
    _check_threads(threads)
    # threads_for wants 64K entries a thread: 512K weights x tokens is 64K eighths
    threads = _core.threads_for(threads, rows * cols * max(1, math.prod(x.shape[:-1])) >> 3)
    if method not in _LUT_METHODS:
        raise ValueError(f"method must be one of {_LUT_METHODS}, got {method!r}")
    if table not in _TABLES:
        raise ValueError(f"table must be one of {_TABLES}, got {table!r}")
    if precision is None:  # a float-table design asked for by name implies the float tables
        precision = DEFAULT_PRECISION if table == "auto" else "exact"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and table != "auto":
        raise ValueError(f"table={table!r} selects a float-table design: use it with precision='exact'")
    lead = x.shape[:-1]
    tokens = math.prod(lead)
    if out is None:
        out = np.empty(lead + (rows,), np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            raise TypeError("out must be a float32 numpy array")  # a wrong type (docs/errors.md)
        if out.shape != lead + (rows,):
            raise ValueError(f"out must have shape {lead + (rows,)}, got {out.shape}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
    x2 = np.require(x.reshape(tokens, cols), np.float32, ("C", "A"))  # kernels read whole floats
    if method == "dequantize" or (method == "auto" and tokens >= BATCH_CROSSOVER[Wq.bits]):
        np.matmul(x2, Wq.dequantize().T, out=out.reshape(tokens, rows))
        return out
    # an out off its float grid gets the result through an aligned buffer
    y2 = out.reshape(tokens, rows) if out.flags.aligned else np.empty((tokens, rows), np.float32)
    if precision == "int8":
        _core.lut_gemm_rows_i8(*Wq.packed_int8(), rows, cols, Wq._gs, Wq.bits, x2, y2, int(threads))
    else:
        _core.lut_gemm_rows(*Wq._args(), x2, y2, int(threads), table)
    if not out.flags.aligned:
        out.reshape(tokens, rows)[...] = y2
    return out


def _lut_gemm_i8_ready(x, Wq, threads):
    """lut_gemm's int8 path for an x the kernel reads as it is (C-contiguous aligned
    float32 (..., cols), fewer tokens than the crossover) and threads None or an int
    >= 1; None for anything else (the checking path then handles it)."""
    rows, cols = Wq.shape
    shape = x.shape
    if (x.dtype != np.float32 or not shape or shape[-1] != cols or not x.flags.c_contiguous
            or not x.flags.aligned or not (threads is None or (type(threads) is int and threads >= 1))):
        return None
    tokens = x.size // cols if cols else math.prod(shape[:-1])
    if tokens >= BATCH_CROSSOVER[Wq.bits] or tokens == 0:
        return None
    y = np.empty(shape[:-1] + (rows,), np.float32)
    threads = _core.threads_for(threads, rows * cols * tokens >> 3)
    _core.lut_gemm_rows_i8(*Wq.packed_int8(), rows, cols, Wq._gs, Wq.bits, x.reshape(tokens, cols),
                           y.reshape(tokens, rows), int(threads))
    return y


def _lut_gemm_stack(x, Wq, out, threads, method, table, precision=None):
    """lut_gemm for a BCQStack: one LUT pass per part (summed), or from BATCH_CROSSOVER[4]
    tokens on (with method="auto") one dequantization of the sum and one matmul."""
    if method not in _LUT_METHODS:
        raise ValueError(f"method must be one of {_LUT_METHODS}, got {method!r}")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")  # docs/errors.md
    rows, cols = Wq.shape
    if x.ndim < 1 or x.shape[-1] != cols:
        raise ValueError(f"x must have shape (..., {cols}), got {x.shape}")
    tokens = math.prod(x.shape[:-1])
    if method == "auto":
        method = "dequantize" if tokens >= BATCH_CROSSOVER[_MAX_PLANES] else "lut"
    if method == "lut":  # the first call checks out, threads and table
        y = lut_gemm(x, Wq.parts[0], out=out, threads=threads, method="lut", table=table, precision=precision)
        part = np.empty_like(y)
        for p in Wq.parts[1:]:
            lut_gemm(x, p, out=part, threads=threads, method="lut", table=table, precision=precision)
            y += part
        return y
    _check_threads(threads)
    if table not in _TABLES:
        raise ValueError(f"table must be one of {_TABLES}, got {table!r}")
    lead = x.shape[:-1]
    if out is None:
        out = np.empty(lead + (rows,), np.float32)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32:  # docs/errors.md
        raise TypeError(f"out must be a float32 numpy array, got {getattr(out, 'dtype', type(out).__name__)}")
    elif out.shape != lead + (rows,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {lead + (rows,)}")
    x2 = np.require(x.reshape(tokens, cols), np.float32, ("C", "A"))
    np.matmul(x2, Wq.dequantize().T, out=out.reshape(tokens, rows))
    return out


def preferred_table() -> str:
    """The table design ``table="auto"`` uses on the active backend.

    Only :func:`lut_gemm` with ``precision="exact"`` reads it.

    Returns
    -------
    str
        ``"mu8"`` (the paper's 256-entry tables) on the scalar backend, ``"mu4"``
        (16-entry tables) on AVX2, AVX-512 and NEON.

    Examples
    --------
    >>> import exaq_cpu
    >>> from exaq_cpu import lutgemm
    >>> with exaq_cpu.use_backend("scalar"):
    ...     print(lutgemm.preferred_table())
    mu8
    >>> lutgemm.preferred_table() in ("mu4", "mu8")
    True
    """
    return _core.lut_preferred_design()


if os.environ.get("EXAQ_CPU_LUT_PRECISION"):  # e.g. exact vs int8 perplexity of a whole model
    DEFAULT_PRECISION = os.environ["EXAQ_CPU_LUT_PRECISION"]
    if DEFAULT_PRECISION not in PRECISIONS:
        raise ValueError(f"EXAQ_CPU_LUT_PRECISION must be one of {PRECISIONS}, got {DEFAULT_PRECISION!r}")

if os.environ.get("EXAQ_CPU_LUT_CROSSOVER"):  # tuning knob for other machines: one count for all bits
    BATCH_CROSSOVER = dict.fromkeys(BATCH_CROSSOVER, int(os.environ["EXAQ_CPU_LUT_CROSSOVER"]))
