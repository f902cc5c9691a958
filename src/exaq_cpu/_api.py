"""Python layer of the softmax: argument checking, layout, docs and defaults.

The numerical work happens in C (``_core``); this module only turns any array
into rows of contiguous float32 and back.
"""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Optional, Union, overload

import numpy as np

from . import _core, _torch
from ._args import (ClipArg, batch_shape_of, check_axis, check_bits, check_floor, check_out, check_scores,
                    common_clip_params, restore_axis, result_dtype, to_rows)
from ._backend import call_backend
from ._clip import clip_params
from .packed import PackedSoftmax, _softmax_packed

if TYPE_CHECKING:  # for the annotations only: torch stays optional
    import torch

#: what ``bits`` takes: a code width, or None for the exact softmax
Bits = Optional[Literal[2, 3, 4]]
#: the clip mode names ``softmax`` takes (and None, or a negative float)
ClipName = Literal["gauss", "laplace", "row", "naive", "table", "exp_mse", "softmax_mse", "softmax_kl",
                   "softmax_l1", "accurate"]
Clip = Union[ClipName, float, None, np.ndarray]
Floor = Literal["exp", "zero"]


class QuantizedRows(NamedTuple):
    """EXAQ codes of every softmax row, with what is needed to turn them into probabilities.

    What :func:`quantize` returns (a :class:`typing.NamedTuple`: unpack it or
    read the fields by name).  With ``batch_shape`` the input's shape without
    ``axis``, the probability of an unmasked entry is ``table[..., code]`` of
    its row, bit for bit what :func:`softmax` gives.

    Attributes
    ----------
    codes : numpy.ndarray of uint8
        The input's shape; codes ``0 .. 2**bits - 1`` along ``axis``.  Masked
        (``-inf``) entries hold 0.
    lo : numpy.ndarray of float32
        ``batch_shape``: each row's range low end (``t = x - rowmax`` is
        quantized on ``[lo, 0]``); NaN for rows holding NaN or ``+inf``.
    table : numpy.ndarray of float32
        ``batch_shape + (2**bits,)``: the probability each code stands for in
        that row (all zero for a fully masked row, NaN for a row with NaN/+inf).
    bits : int
        The code width, 2, 3 or 4.
    axis : int
        The softmax axis, normalized to ``0 .. ndim - 1``.

    See Also
    --------
    quantize : makes it.
    pack : packs ``codes`` to 2/3/4 bits each.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> q = exaq_cpu.quantize(np.zeros((2, 3, 5), np.float32), bits=3, axis=1)
    >>> q.codes.shape, q.lo.shape, q.table.shape, q.bits, q.axis
    ((2, 3, 5), (2, 5), (2, 5, 8), 3, 1)
    >>> codes, lo, table, bits, axis = q          # a tuple too
    """

    codes: np.ndarray
    lo: np.ndarray
    table: np.ndarray
    bits: int
    axis: int


@overload
def softmax(x: "torch.Tensor", bits: Bits = 2, *, axis: Optional[int] = -1, clip: Clip = "gauss",
            floor: Floor = "exp", out: Any = None, dtype: Any = None, output: Literal["float"] = "float",
            threads: Optional[int] = None, backend: Optional[str] = None) -> "torch.Tensor": ...
@overload
def softmax(x: Any, bits: Bits = 2, *, axis: Optional[int] = -1, clip: Clip = "gauss",
            floor: Floor = "exp", out: Optional[np.ndarray] = None, dtype: Any = None,
            output: Literal["float"] = "float", threads: Optional[int] = None,
            backend: Optional[str] = None) -> np.ndarray: ...
@overload
def softmax(x: Any, bits: Literal[2, 3, 4] = 2, *, axis: Optional[int] = -1, clip: Clip = "gauss",
            floor: Floor = "exp", out: None = None, dtype: None = None, output: Literal["packed"],
            threads: Optional[int] = None, backend: Optional[str] = None) -> PackedSoftmax: ...
def softmax(x, bits: Optional[int] = 2, *, axis: Optional[int] = -1, clip: ClipArg = "gauss",
            floor: str = "exp", out=None, dtype=None, output: str = "float",
            threads: Optional[int] = None, backend: Optional[str] = None):
    """Softmax along ``axis``, EXAQ-quantized (``bits`` = 2, 3, 4) or exact (``bits=None``).

    EXAQ (``bits`` given): each row is shifted by its maximum (``t = x - max``),
    clipped to ``[lo, 0]``, quantized to ``2**bits`` uniform levels (round half
    to even), and every code ``k`` stands for ``exp(lo + k*|lo|/(2**bits-1))``;
    probabilities are those exponents over their row sum.  ``lo`` is chosen by
    ``clip`` (below; ``docs/semantics.md`` section 3.2).

    Masked entries (``-inf``) get exactly 0, and a row with every entry masked
    gives all zeros.  A row holding NaN or ``+inf`` gives NaN (other rows are
    unaffected and those rows are left out of pooled statistics).  A range
    narrower than 2**-64 (constant rows) is widened to it, so every entry gets
    the top code and the row is uniform.

    Parameters
    ----------
    x : array_like or torch.Tensor
        The scores, of any shape, layout and strides.  float32 is native;
        float16 and float64 are computed in float32, integers and booleans as
        float32, and the masked entries of a ``numpy.ma.MaskedArray`` count as ``-inf``.  A CPU
        ``torch.Tensor`` (float16/32/64, bfloat16) is read in place and the
        result is a tensor sharing the result's memory; tensors that require
        grad are read as values (the result carries no autograd history).
        torch is never imported by exaq_cpu itself.
    bits : {2, 3, 4} or None, default 2
        Code width of the EXAQ quantizer, or ``None`` for the exact softmax.
    axis : int or None, default -1
        The softmax axis.  ``None`` (or a 0-d ``x``): every entry in one
        softmax, as in ``scipy.special.softmax``.
    clip : str, float, None or array_like, default "gauss"
        How ``lo`` is chosen:

        - ``"gauss"`` (default): ``lo = max(min t, a*sigma + c)`` with the paper's
          linear law for ``bits`` and ``sigma``, ``min t`` pooled over every unmasked
          score of this call (all rows, as for one attention call of a layer);
        - ``"laplace"``: the paper's Laplace law (bits 2 and 4) on the pooled mean
          absolute deviation;
        - ``"row"``: the gauss law with each row's own sigma and minimum;
        - ``None`` (or ``"naive"``): no clipping, ``lo`` = pooled minimum;
        - a finite negative float: a static clip, ``lo`` is exactly that value
          (as frozen by calibration, see ``exaq_cpu.clipping.Calibrator``);
        - an array of negative floats: a static clip per row, broadcast against the
          rows' shape (``x.shape`` without ``axis``); a 1-D array as long as that
          shape's second axis is read along it, so ``Calibrator(per_head=True)``'s
          clips of ``(batch, heads, q, k)`` scores apply head by head
          (``output="float"`` only);
        - other names (``"table"``, ``"softmax_mse"``, ``"accurate"``, ...):
          solver-derived modes from ``exaq_cpu.clipping``
          (``clipping.STATS_CLIP_MODES``).

        Only the default is allowed with ``bits=None``.
    floor : {"exp", "zero"}, default "exp"
        ``"exp"`` (the paper): code 0 still contributes ``exp(lo)`` to the
        row sum; ``"zero"``: code 0 contributes exactly 0, so clipped entries
        drop out.
    out : numpy.ndarray or torch.Tensor, optional
        Where to write the result: ``x``'s shape, a float dtype (float16, 32
        or 64; it sets the result dtype when ``dtype`` is None), writable; may
        be ``x`` itself.  Keyword only.
    dtype : dtype, optional
        float16, float32 or float64: the result dtype (computed in float32
        all the same).  Default float32, or ``out``'s dtype.
    output : {"float", "packed"}, default "float"
        ``"packed"`` (bits 2, 3, 4; no ``out``/``dtype``) returns an
        :class:`exaq_cpu.PackedSoftmax` instead: the packed codes and each row's
        ``2**bits`` probabilities, built without writing any float probability;
        its ``to_float()`` equals the float output bit for bit (``docs/packed.md``).
    threads : int or None, default None
        Rows are split across this many threads of the library's one
        persistent worker pool (shared with LUT-GEMM); ``None`` uses
        every core the process may run on, but only for calls big enough to gain
        (64K scores a thread), so small and decode-sized calls stay on the calling
        thread.  The result does not depend on the thread count, bit for bit.  A
        call that finds the pool busy (another Python thread's call) runs on its
        own thread alone: concurrent callers never oversubscribe the cores.  The
        GIL is released while the kernels run.
    backend : str or None, default None
        A backend name (``exaq_cpu.backends()``) for this call only,
        as inside ``with exaq_cpu.use_backend(backend):``; ``None``: the
        thread's or process's choice.  Every backend gives the same result.

    Returns
    -------
    numpy.ndarray, torch.Tensor or PackedSoftmax
        The probabilities, of ``x``'s shape and the result dtype (float32
        unless ``dtype``/``out`` say otherwise); ``out`` itself when given; a
        tensor when ``x`` or ``out`` is one; a :class:`PackedSoftmax` with
        ``output="packed"``.

    Raises
    ------
    TypeError
        For an argument of the wrong type: non-numeric scores, ``bits=2.0``,
        a non-integer ``axis`` or ``threads``, a ``clip`` of another type, an
        ``out`` that is not an array or whose dtype is not ``dtype``.
    ValueError
        For a wrong value: ``bits=5``, an axis out of range, an unknown clip
        mode or ``output``, a non-negative static clip, ``clip="laplace"``
        with 3 bits, a clip other than the default with ``bits=None``, an
        ``out`` of another shape or read-only, a non-float ``dtype``,
        ``threads < 1``, an unknown or unavailable ``backend``.  Each message
        names the argument (``docs/errors.md``).

    See Also
    --------
    softmax_into : the same for ready float32 arrays in hot loops.
    quantize : the codes and per-row tables instead of probabilities.
    score_stats : the pooled statistics the default clip reads.
    exaq_cpu.clipping.Calibrator : static clips per layer.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> scores = np.array([[2.0, 1.0, 0.0, -np.inf]], np.float32)
    >>> p = exaq_cpu.softmax(scores, bits=2)           # 4 codes a row, -inf gets exactly 0
    >>> p.dtype, p.shape, float(p[0, 3])
    (dtype('float32'), (1, 4), 0.0)
    >>> bool(abs(p.sum() - 1) < 1e-6)
    True
    >>> exact = exaq_cpu.softmax(scores, bits=None)    # the exact kernel
    >>> np.round(exact, 4)
    array([[0.6652, 0.2447, 0.09  , 0.    ]], dtype=float32)
    >>> exaq_cpu.softmax(scores, bits=2, output="packed").bits
    2
    """
    if backend is not None:
        with call_backend(backend):
            return softmax(x, bits, axis=axis, clip=clip, floor=floor, out=out, dtype=dtype, output=output,
                           threads=threads)
    if bits is None and clip != "gauss":  # (the default, which the exact kernel ignores)
        raise ValueError(f"clip={clip!r} has no meaning for the exact softmax (bits=None)")
    if dtype is None and (out is None or type(out) is np.ndarray):
        result = _core.softmax_common(x, bits, axis, clip, floor, out, output, threads)
        if result is not None:
            return result
    if _torch.any_tensor(x, out):
        return _softmax_torch(x, bits, axis, clip, floor, out, dtype, output, threads)
    if isinstance(x, np.ma.MaskedArray):  # masked entries are masked scores: -inf
        x = np.ma.filled(x.astype(np.result_type(x.dtype, np.float32)), -np.inf)
    if axis is None or np.ndim(x) == 0:  # scipy's conventions: every entry in one softmax; a scalar is 1
        flat = np.asarray(x)
        if out is not None and output == "float":
            dtype = check_out(out, flat.shape, result_dtype(dtype, out)).dtype
        whole = softmax(flat.reshape(-1), bits, clip=clip, floor=floor, dtype=dtype, output=output,
                        threads=threads)
        if output != "float":
            return whole
        if out is None:
            return whole.reshape(flat.shape)
        out[...] = whole.reshape(flat.shape)
        return out
    arr = check_scores(x)
    threads = _check_threads(threads)
    bits = check_bits(bits, allow_none=True)
    axis = check_axis(axis, arr.ndim)
    floor = check_floor(floor)
    row_clips = isinstance(clip, (np.ndarray, list, tuple))  # one static clip per row group (per head)
    if row_clips and (output != "float" or bits is None):
        raise ValueError("a clip array takes bits 2, 3 or 4 and output='float'")
    if output != "float":
        if output != "packed":
            raise ValueError(f"output must be 'float' or 'packed', got {output!r}")
        if bits is None:
            raise ValueError("output='packed' needs bits = 2, 3 or 4")
        if out is not None or dtype is not None:
            raise ValueError("output='packed' takes neither out nor dtype")
        return _softmax_packed(arr, bits, axis, clip, floor, threads)
    res_dtype = result_dtype(dtype, out)
    if out is not None:
        check_out(out, arr.shape, res_dtype)
    rows = to_rows(arr, axis)
    direct = out is not None and res_dtype == np.float32 and axis == arr.ndim - 1 and not row_clips \
        and out.flags.c_contiguous and out.flags.aligned and not _overlaps_partially(out, rows)
    target = out.reshape(rows.shape) if direct else np.empty(rows.shape, np.float32)  # direct: a view of out
    if row_clips:
        _row_clip_probabilities(rows, target, batch_shape_of(arr.shape, axis), bits, np.asarray(clip), floor,
                                threads)
    elif bits is None:
        _core.softmax_exact(rows, target, threads)
    else:
        mode, slope, intercept, static_lo = clip_params(clip, bits, floor, rows)
        _core.softmax_quantized(rows, target, bits, mode, slope, intercept, static_lo, floor, None, threads)

    if direct:
        return out
    result = restore_axis(target, batch_shape_of(arr.shape, axis), axis)
    if out is not None:
        out[...] = result
        return out
    return result if res_dtype == np.float32 else result.astype(res_dtype)


def _check_threads(threads) -> Optional[int]:
    """threads as given, once the core's check (TypeError/ValueError) passed it: a bad
    value fails before any conversion of the scores."""
    if threads is not None:
        _core.threads_for(threads, 0)
    return threads


def _row_clip_probabilities(rows, target, batch, bits, clips, floor, threads) -> None:
    """Probabilities of ``rows`` into ``target`` with a static clip per row: ``clips``
    broadcast against the rows' shape ``batch``; a 1-D array as long as that shape's
    second axis (the heads of (batch, heads, q, k) scores, ``Calibrator(per_head=True)``'s
    convention) is read along it.  Rows sharing a clip go through one call."""
    if clips.dtype.kind not in "fiu" or clips.size == 0:
        raise TypeError(f"a clip array must hold negative floats, got dtype {clips.dtype}")
    if clips.ndim == 1 and len(batch) >= 2 and clips.size == batch[1] and clips.size != batch[-1]:
        clips = clips.reshape((1, clips.size) + (1,) * (len(batch) - 2))
    try:
        per_row = np.broadcast_to(clips.astype(np.float64), batch).reshape(-1)
    except ValueError:
        raise ValueError(f"clip array of shape {clips.shape} does not broadcast to the rows' shape {batch}") from None
    if not (np.all(per_row < 0) and np.all(np.isfinite(per_row))):
        raise ValueError("a clip array must hold finite negative numbers")
    for value in np.unique(per_row):
        picked = np.flatnonzero(per_row == value)
        part = np.ascontiguousarray(rows[picked])
        probs = np.empty(part.shape, np.float32)
        _core.softmax_quantized(part, probs, bits, "static", 0.0, 0.0, float(value), floor, None, threads)
        target[picked] = probs


def _softmax_torch(x, bits, axis, clip, floor, out, dtype, output, threads):
    """softmax of a CPU torch tensor (or into one): NumPy views in, a tensor out."""
    arr = _torch.to_numpy(x) if _torch.is_tensor(x) else x
    if out is None or not _torch.is_tensor(out):
        result = softmax(arr, bits, axis=axis, clip=clip, floor=floor, out=out, dtype=dtype, output=output,
                         threads=threads)
        return result if output != "float" or out is not None else _torch.from_numpy(result)
    if out.requires_grad:
        raise ValueError("out must not require grad (the kernels write it in place, outside autograd)")
    view = _torch.to_numpy(out, "out", writable=True)
    softmax(arr, bits, axis=axis, clip=clip, floor=floor, out=view, dtype=view.dtype if dtype is None else dtype,
            output=output, threads=threads)
    return out


def softmax_into(x: np.ndarray, out: np.ndarray, bits: Optional[int] = 2, *, clip: Union[str, float] = "gauss",
                 floor: str = "exp", threads: Optional[int] = 1, backend: Optional[str] = None) -> np.ndarray:
    """:func:`softmax` along the last axis of ready arrays, for hot loops (decode steps).

    The arrays are taken as they are, nothing is converted.  The
    preconditions below are checked with a few flag tests in C (no access out
    of bounds is possible), skipping the general path's argument handling.
    The result is bit for bit what ``softmax(x, bits, clip=clip, floor=floor,
    out=out)`` gives.

    Parameters
    ----------
    x : numpy.ndarray
        C-contiguous, aligned, native-order float32 scores of at least one
        dimension; the softmax runs along the last axis.
    out : numpy.ndarray
        Same shape and requirements as ``x``, writable, and either ``x``
        itself or not overlapping it.
    bits : {2, 3, 4} or None, default 2
        Code width, or ``None`` for the exact softmax.
    clip : str or float, default "gauss"
        A published law name (``"gauss"``, ``"laplace"`` for bits 2 and 4,
        ``"row"``) or a static finite negative float; only the default with
        ``bits=None``.
    floor : {"exp", "zero"}, default "exp"
        As for :func:`softmax`.
    threads : int or None, default 1
        As for :func:`softmax`, but 1 by default here (decode-sized calls).
    backend : str or None, default None
        As for :func:`softmax`.

    Returns
    -------
    numpy.ndarray
        ``out``, holding the probabilities.

    Raises
    ------
    TypeError
        If ``x`` is not a ``numpy.ndarray``, or ``bits``, ``clip`` or
        ``threads`` has the wrong type.
    ValueError
        If ``x`` or ``out`` breaks a precondition above (not an array of
        ``x``'s shape, another dtype, not C-contiguous, read-only, partly
        overlapping), for a clip that is not
        a published law or a negative float (e.g. ``"table"``), ``bits`` out
        of range, an unknown ``floor`` or ``backend``.

    See Also
    --------
    softmax : the general entry (any layout, dtype, axis and clip mode).

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> step = np.random.default_rng(0).standard_normal((9, 1, 512)).astype(np.float32)
    >>> probs = np.empty_like(step)
    >>> exaq_cpu.softmax_into(step, probs, 2) is probs   # a decode step of 9 heads
    True
    >>> bool(np.array_equal(probs, exaq_cpu.softmax(step, 2)))
    True
    """
    if backend is not None:
        with call_backend(backend):
            return softmax_into(x, out, bits, clip=clip, floor=floor, threads=threads)
    if bits is None and clip != "gauss":
        raise ValueError(f"clip={clip!r} has no meaning for the exact softmax (bits=None)")
    result = _core.softmax_into(x, out, bits, clip, floor, threads)
    if result is None:  # argument types off the common path: checked (and reported) here
        result = _softmax_into_checked(x, out, bits, clip, floor, threads)
    return result


def _softmax_into_checked(x, out, bits, clip, floor, threads) -> np.ndarray:
    """softmax_into for argument types off the common path (numpy scalars, a
    floor to normalize): checked and reported here, then the same C entry."""
    if bits is not None:
        bits = check_bits(bits)
        if type(clip) is not str and type(clip) is not float and isinstance(clip, numbers.Real) \
                and not isinstance(clip, bool):
            clip = float(clip)
        if common_clip_params(clip, bits) is None:
            if not isinstance(clip, (str, float)):
                raise TypeError(f"clip must be a law name or a negative float, got {type(clip).__name__}")
            raise ValueError(f"softmax_into takes a published law ('gauss', 'laplace' for bits 2 and 4, 'row') "
                             f"or a finite negative float as clip, got {clip!r}")
    result = _core.softmax_into(x, out, bits, clip, check_floor(floor), threads)
    if result is None:  # every argument is of a kind the C entry reads now
        raise TypeError(f"softmax_into could not read its arguments: bits={bits!r}, clip={clip!r}")
    return result


def _overlaps_partially(out: np.ndarray, rows: np.ndarray) -> bool:
    """True if out and rows share memory other than as the very same buffer (in place)."""
    if not np.may_share_memory(out, rows):
        return False
    same = (out.__array_interface__["data"][0] == rows.__array_interface__["data"][0]
            and out.size == rows.size and rows.flags.c_contiguous)
    return not same


def quantize(x, bits: int = 2, *, axis: int = -1, clip: ClipArg = "gauss",
             floor: str = "exp", backend: Optional[str] = None) -> QuantizedRows:
    """EXAQ codes of ``x`` along ``axis`` and each row's probability table.

    The same range choice and arithmetic as :func:`softmax`;
    ``softmax(x, bits, ...)`` equals ``table[..., codes]`` on unmasked
    entries, bit for bit.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Scores of any shape with at least one dimension (float16/32/64;
        integers and booleans are taken as float32).  A CPU tensor gives
        tensors in the result.
    bits : {2, 3, 4}, default 2
        Code width (no exact mode here).
    axis : int, default -1
        The softmax axis.
    clip : str, float or None, default "gauss"
        Range choice, as for :func:`softmax` (a law name, ``None``, a finite
        negative static clip, or a mode of ``clipping.STATS_CLIP_MODES``;
        clip arrays are not taken here).
    floor : {"exp", "zero"}, default "exp"
        As for :func:`softmax`: with ``"zero"`` the table's entry 0 is 0.
    backend : str or None, default None
        As for :func:`softmax`.

    Returns
    -------
    QuantizedRows
        ``(codes, lo, table, bits, axis)``: uint8 codes of ``x``'s shape,
        float32 ``lo`` and ``table`` (``2**bits`` probabilities a row) of the
        input's shape without ``axis``, and the normalized ``axis``.

    Raises
    ------
    TypeError
        Non-numeric scores, a non-int ``bits`` or ``axis``, a ``clip`` of
        another type (a list, ``True``).
    ValueError
        ``bits`` not in 2..4, a 0-d ``x``, an axis out of range, an unknown
        clip mode or ``floor``, a non-negative static clip, ``"laplace"`` with
        3 bits, an unknown or unavailable ``backend``.

    See Also
    --------
    softmax : the probabilities themselves.
    pack : pack the codes 2, 3 or 4 bits each.
    QuantizedRows : the fields of the result.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> x = np.array([[2.0, 1.0, 0.0, -3.0]], np.float32)
    >>> q = exaq_cpu.quantize(x, bits=2)   # lo = min t = -5 here: codes rint((t + 5) * 3/5)
    >>> q.codes
    array([[3, 2, 2, 0]], dtype=uint8)
    >>> bool(np.array_equal(np.take_along_axis(q.table, q.codes.astype(int), -1), exaq_cpu.softmax(x, 2)))
    True
    >>> q.lo, q.table.shape
    (array([-5.], dtype=float32), (1, 4))
    >>> exaq_cpu.quantize(x, bits=2, clip=-1.0).codes   # a static clip: t below -1 gets code 0
    array([[3, 0, 0, 0]], dtype=uint8)
    """
    if backend is not None:
        with call_backend(backend):
            return quantize(x, bits, axis=axis, clip=clip, floor=floor)
    if _torch.is_tensor(x):  # codes, lo and table come back as tensors
        q = quantize(_torch.to_numpy(x), bits, axis=axis, clip=clip, floor=floor)
        return q._replace(codes=_torch.from_numpy(q.codes), lo=_torch.from_numpy(q.lo),
                          table=_torch.from_numpy(q.table))
    arr = check_scores(x)
    bits = check_bits(bits)
    axis = check_axis(axis, arr.ndim)
    floor = check_floor(floor)
    rows = to_rows(arr, axis)
    mode, slope, intercept, static_lo = clip_params(clip, bits, floor, rows)
    codes = np.empty(rows.shape, np.uint8)
    lo = np.empty(rows.shape[0], np.float32)
    table = np.empty((rows.shape[0], 1 << bits), np.float32)
    _core.quantize_codes(rows, codes, lo, table, bits, mode, slope, intercept, static_lo, floor)
    batch_shape = batch_shape_of(arr.shape, axis)
    return QuantizedRows(
        codes=restore_axis(codes, batch_shape, axis),
        lo=lo.reshape(batch_shape),
        table=table.reshape(batch_shape + (1 << bits,)),
        bits=bits,
        axis=axis,
    )


def score_stats(x, *, axis: int = -1, backend: Optional[str] = None) -> dict:
    """Statistics of the shifted scores ``t = x - rowmax`` pooled over the whole call.

    Every row (along ``axis``) is shifted by its maximum, then all unmasked
    ``t`` of every row are pooled, as the pooled clip modes of
    :func:`softmax` do (``docs/semantics.md`` section 3.1).  Masked
    (``-inf``) entries take no part; rows holding NaN or ``+inf`` are left
    out and counted.  The sums are taken in double precision and are the
    same on every backend.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Scores of any shape with at least one dimension (float16/32/64,
        integers and booleans as float32).
    axis : int, default -1
        The softmax axis (the one each row runs along).
    backend : str or None, default None
        As for :func:`softmax`.

    Returns
    -------
    dict
        ``sigma`` (float, standard deviation with Bessel's correction, 0 for
        fewer than two scores), ``min`` (float, the pooled minimum of ``t``,
        i.e. ``lo_obs``), ``mean`` (float), ``mean_abs_dev`` (float, mean
        ``|t - mean t|``, the Laplace law's ``b``), ``count`` (int, unmasked
        scores pooled), ``invalid_rows`` (int, rows with NaN/+inf).  With no
        unmasked score the float fields are NaN.

    Raises
    ------
    TypeError
        Non-numeric scores or a non-int ``axis``.
    ValueError
        A 0-d ``x``, an axis out of range, an unknown or unavailable
        ``backend``.

    See Also
    --------
    exaq_cpu.clipping.numpy_score_stats : a NumPy reference of the same figures.
    exaq_cpu.clipping.clip_from_stats : a clip from these statistics.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> st = exaq_cpu.score_stats(np.array([[2.0, 1.0, 0.0, -3.0]], np.float32))
    >>> st["min"], st["mean"], st["mean_abs_dev"], st["count"]    # t = [0, -1, -2, -5]
    (-5.0, -2.0, 1.5, 4)
    >>> round(st["sigma"], 4)                                     # sqrt(14 / 3)
    2.1602
    >>> masked = np.array([[0.0, -np.inf], [np.nan, 1.0]], np.float32)
    >>> st = exaq_cpu.score_stats(masked)    # -inf takes no part, the NaN row is left out
    >>> st["count"], st["invalid_rows"], st["sigma"]
    (1, 1, 0.0)
    """
    if backend is not None:
        with call_backend(backend):
            return score_stats(x, axis=axis)
    arr = check_scores(_torch.to_numpy(x) if _torch.is_tensor(x) else x)
    axis = check_axis(axis, arr.ndim)
    return _core.score_stats(to_rows(arr, axis))
