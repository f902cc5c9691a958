"""Python layer of the softmax: argument checking, layout, docs and defaults.

The numerical work happens in C (``_core``); this module only turns any array
into rows of contiguous float32 and back.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Union

import numpy as np

from . import _core
from ._backend import call_backend

# Published linear clipping laws of the EXAQ paper, C = slope * s + intercept,
# with s = sigma (gauss) or mean |t - mean t| (laplace).
GAUSS_LAW = {2: (-1.66, -1.85), 3: (-1.75, -2.06), 4: (-1.83, -2.27)}
LAPLACE_LAW = {2: (-4.01, -1.77), 4: (-6.82, -0.15)}
# (mode, bits) -> the C driver's parameters, for the modes that are a published law
_core.set_published_laws(GAUSS_LAW, LAPLACE_LAW)  # the C fast entries' copy
_LAW_PARAMS = {**{(mode, b): (mode,) + law + (0.0,) for mode in ("gauss", "row") for b, law in GAUSS_LAW.items()},
               **{("laplace", b): ("laplace",) + law + (0.0,) for b, law in LAPLACE_LAW.items()}}

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_KERNEL_CLIPS = ("gauss", "laplace", "row")

ClipArg = Union[str, float, None]


class QuantizedRows(NamedTuple):
    """EXAQ codes of every softmax row, with what is needed to turn them into probabilities.

    ``codes``: uint8, the shape of the input, codes ``0 .. 2**bits - 1`` along
    ``axis`` (masked entries hold 0).  ``lo``: float32, the input's shape
    without ``axis``: each row's range low end (NaN for rows with NaN/+inf).
    ``table``: float32, ``lo.shape + (2**bits,)``: probability of each code in
    that row (all zero for a fully masked row), so ``p = table[code]`` for
    every unmasked entry.
    """

    codes: np.ndarray
    lo: np.ndarray
    table: np.ndarray
    bits: int
    axis: int


def _check_scores(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"x must hold floating-point scores, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension")
    return arr


def _check_axis(axis, ndim: int) -> int:
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, without the ABC checks
        return axis % ndim
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return axis % ndim


def _check_bits(bits, allow_none: bool = True) -> Optional[int]:
    if type(bits) is int and 2 <= bits <= 4:
        return bits
    if bits is None and allow_none:
        return None
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):  # docs/errors.md
        raise TypeError(f"bits must be an int (2, 3 or 4{' or None' if allow_none else ''}), "
                        f"got {type(bits).__name__} {bits!r}")
    if int(bits) not in (2, 3, 4):
        raise ValueError(f"bits must be 2, 3 or 4{' or None' if allow_none else ''}, got {bits!r}")
    return int(bits)


def _check_floor(floor) -> str:
    if floor not in ("exp", "zero"):
        raise ValueError(f"floor must be 'exp' or 'zero', got {floor!r}")
    return floor


def _rows(arr: np.ndarray, axis: int, dtype=np.float32) -> np.ndarray:
    """(rows, n) C-contiguous, aligned view or copy of ``arr`` in ``dtype``, ``axis`` last
    (the kernels read whole elements: a buffer off its element grid is copied)."""
    flags = arr.flags
    if arr.ndim == 2 and axis == 1 and arr.dtype == dtype and flags.c_contiguous and flags.aligned:
        return arr
    moved = arr if axis == arr.ndim - 1 else np.moveaxis(arr, axis, -1)
    flat = np.require(moved, dtype=dtype, requirements=("C", "A"))
    return flat.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])


def _restore_axis(rows: np.ndarray, batch_shape: tuple, axis: int) -> np.ndarray:
    """Inverse of :func:`_rows`: (rows, n) back to the caller's layout (a view)."""
    shaped = rows.reshape(batch_shape + (rows.shape[-1],))
    return shaped if axis == len(batch_shape) else np.moveaxis(shaped, -1, axis)


def _batch_shape(shape: tuple, axis: int) -> tuple:
    return tuple(shape[:axis]) + tuple(shape[axis + 1:])


def _common_clip_params(clip, bits: int):
    """The C driver's parameters for a published law (by name) or a static float
    clip, with one lookup; None for anything else."""
    if type(clip) is str:
        return _LAW_PARAMS.get((clip, bits))
    if type(clip) is float and clip < 0 and clip != -math.inf:
        return "static", 0.0, 0.0, clip
    return None


def _clip_params(clip: ClipArg, bits: int, floor: str, rows: np.ndarray):
    """(mode, slope, intercept, static_lo) for the C driver."""
    params = _common_clip_params(clip, bits)  # the common cases first
    if params is not None:
        return params
    if clip is None:
        return "none", 0.0, 0.0, 0.0
    if isinstance(clip, str):
        if clip in ("gauss", "row"):
            return (clip,) + GAUSS_LAW[bits] + (0.0,)
        if clip == "laplace":
            if bits not in LAPLACE_LAW:
                raise ValueError(f"clip='laplace' has published laws for bits 2 and 4 only, got bits={bits}")
            return ("laplace",) + LAPLACE_LAW[bits] + (0.0,)
        clipping = _clipping_module()
        if clip not in getattr(clipping, "STATS_CLIP_MODES", ()):
            raise ValueError(f"unknown clip mode {clip!r}")
        stats = _core.score_stats(rows)
        if stats["count"] == 0:
            return "none", 0.0, 0.0, 0.0
        lo = float(clipping.clip_from_stats(clip, stats, bits, floor))
        if not lo < 0:
            # No spread in the pool (one key, constant rows): lo = max(lo_obs, C) = lo_obs = 0
            # whatever C is, which is exactly the naive range; the kernel widens it to its
            # minimum as it does for "gauss". A static clip must be negative, so 0 cannot go there.
            return "none", 0.0, 0.0, 0.0
        return "static", 0.0, 0.0, lo
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real):
        raise TypeError(f"clip must be a mode name, None or a negative float, got {type(clip).__name__}")
    value = float(clip)
    if not (value < 0 and math.isfinite(value)):
        raise ValueError(f"a static clip must be a finite negative number, got {clip!r}")
    return "static", 0.0, 0.0, value


_PACKED = []


def _packed_module():
    """exaq_cpu.packed (it imports this module, so it is looked up on first use)."""
    if not _PACKED:
        from . import packed

        _PACKED.append(packed)
    return _PACKED[0]


def _clipping_module():
    """exaq_cpu.clipping (solver-derived clip modes), imported on first use."""
    try:
        from . import clipping
    except ImportError:  # a build without the analysis module: only kernel modes
        return None
    return clipping


def _check_out(out, shape, dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _result_dtype(dtype) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype {dtype!r} is not a NumPy dtype") from err
    if dt not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float16, float32 or float64, got {dt}")
    return dt


def softmax(x, bits: Optional[int] = 2, *, axis: int = -1, clip: ClipArg = "gauss",
            floor: str = "exp", out: Optional[np.ndarray] = None, dtype=None, output: str = "float",
            threads: Optional[int] = None, backend: Optional[str] = None):
    """Softmax along ``axis``, EXAQ-quantized (``bits`` = 2, 3, 4) or exact (``bits=None``).

    EXAQ (``bits`` given): each row is shifted by its maximum (``t = x - max``),
    clipped to ``[lo, 0]``, quantized to ``2**bits`` uniform levels (round half
    to even), and every code ``k`` stands for ``exp(lo + k*|lo|/(2**bits-1))``;
    probabilities are those exponents over their row sum.  ``lo`` is chosen by
    ``clip``:

    - ``"gauss"`` (default): ``lo = max(min t, a*sigma + c)`` with the paper's
      linear law for ``bits`` and ``sigma``, ``min t`` pooled over every unmasked
      score of this call (all rows, as for one attention call of a layer);
    - ``"laplace"``: the paper's Laplace law (bits 2 and 4) on the pooled mean
      absolute deviation;
    - ``"row"``: the gauss law with each row's own sigma and minimum;
    - ``None``: no clipping, ``lo`` = pooled minimum ("naive");
    - a negative float: a static clip, ``lo`` is exactly that value (as frozen by
      calibration, see ``exaq_cpu.clipping.Calibrator``);
    - other names (``"table"``, ...): solver-derived modes from
      ``exaq_cpu.clipping`` (``clipping.STATS_CLIP_MODES``).

    ``floor="exp"`` (the paper): code 0 still contributes ``exp(lo)`` to the
    sum; ``floor="zero"``: code 0 contributes exactly 0, so clipped entries drop
    out.

    Masked entries (``-inf``) get exactly 0, and a row with every entry masked
    gives all zeros.  A row holding NaN or ``+inf`` gives NaN (other rows are
    unaffected and those rows are left out of pooled statistics).  A range
    narrower than 2**-64 (constant rows) is widened to it, so every entry gets
    the top code and the row is uniform.

    ``x`` may have any shape, layout and strides; float32 is native, float16 and
    float64 are computed in float32.  The result is float32 unless ``dtype`` is
    float16 or float64.  ``out`` (same shape, the result dtype, writable) may be
    ``x`` itself.

    ``output="packed"`` (bits 2, 3, 4; no ``out``/``dtype``) returns an
    :class:`exaq_cpu.PackedSoftmax` instead: the packed codes and each row's
    ``2**bits`` probabilities, built without writing any float probability;
    its ``to_float()`` equals the float output bit for bit (``docs/packed.md``).

    ``threads``: rows are split across this many threads of the library's one
    persistent worker pool (shared with LUT-GEMM); ``None`` (default) uses
    every core the process may run on, but only for calls big enough to gain
    (64K scores a thread), so small and decode-sized calls stay on the calling
    thread.  The result does not depend on the thread count, bit for bit.  A
    call that finds the pool busy (another Python thread's call) runs on its
    own thread alone: concurrent callers never oversubscribe the cores.  The
    GIL is released while the kernels run.

    ``backend``: a backend name (``exaq_cpu.backends()``) for this call only,
    as inside ``with exaq_cpu.use_backend(backend):``; ``None`` (default): the
    thread's or process's choice.  Every backend gives the same result.
    """
    if backend is not None:
        with call_backend(backend):
            return softmax(x, bits, axis=axis, clip=clip, floor=floor, out=out, dtype=dtype, output=output,
                           threads=threads)
    if dtype is None and (out is None or type(out) is np.ndarray):
        result = _core.softmax_common(x, bits, axis, clip, floor, out, output, threads)
        if result is not None:
            return result
    arr = _check_scores(x)
    threads = _check_threads(threads)
    bits = _check_bits(bits)
    axis = _check_axis(axis, arr.ndim)
    floor = _check_floor(floor)
    if output != "float":
        if output != "packed":
            raise ValueError(f"output must be 'float' or 'packed', got {output!r}")
        if bits is None:
            raise ValueError("output='packed' needs bits = 2, 3 or 4")
        if out is not None or dtype is not None:
            raise ValueError("output='packed' takes neither out nor dtype")
        return _packed_module()._softmax_packed(arr, bits, axis, clip, floor, threads)
    res_dtype = _result_dtype(dtype)
    if out is not None:
        _check_out(out, arr.shape, res_dtype)
    rows = _rows(arr, axis)
    params = _clip_params(clip, bits, floor, rows) if bits is not None else None

    direct = out is not None and res_dtype == np.float32 and axis == arr.ndim - 1 \
        and out.flags.c_contiguous and out.flags.aligned and not _overlaps_partially(out, rows)
    if direct:
        target = out.reshape(rows.shape)  # a view: the kernel writes into out
    else:
        target = np.empty(rows.shape, np.float32)
    if bits is None:
        _core.softmax_exact(rows, target, threads)
    else:
        mode, slope, intercept, static_lo = params
        _core.softmax_quantized(rows, target, bits, mode, slope, intercept, static_lo, floor, None, threads)

    if direct:
        return out
    result = _restore_axis(target, _batch_shape(arr.shape, axis), axis)
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


def softmax_into(x: np.ndarray, out: np.ndarray, bits: Optional[int] = 2, *, clip: Union[str, float] = "gauss",
                 floor: str = "exp", threads: Optional[int] = 1, backend: Optional[str] = None) -> np.ndarray:
    """:func:`softmax` along the last axis of ready arrays, for hot loops (decode steps).

    The arrays are taken as they are, nothing is converted: ``x`` and ``out``
    must be ``numpy.ndarray`` of the same shape, C-contiguous, aligned,
    native-order float32, ``out`` writable and either ``x`` itself or not
    overlapping it; ``clip`` a published law name (``"gauss"``, ``"laplace"``,
    ``"row"``) or a static negative float; ``bits`` 2, 3, 4 or ``None``.
    These preconditions are checked with a few flag tests in C (a violation
    raises ``TypeError``/``ValueError``; no access out of bounds is possible),
    skipping the general path's argument handling.  ``threads`` defaults to 1
    here (decode-sized calls).  Returns ``out``, bit for bit what
    ``softmax(x, bits, clip=clip, floor=floor, out=out)`` gives.  ``backend``:
    as for :func:`softmax`.
    """
    if backend is not None:
        with call_backend(backend):
            return softmax_into(x, out, bits, clip=clip, floor=floor, threads=threads)
    result = _core.softmax_into(x, out, bits, clip, floor, threads)
    if result is None:  # argument types off the common path: checked (and reported) here
        result = _softmax_into_checked(x, out, bits, clip, floor, threads)
    return result


def _softmax_into_checked(x, out, bits, clip, floor, threads) -> np.ndarray:
    """softmax_into for argument types off the common path (numpy scalars, a
    floor to normalize): checked and reported here, then the same C entry."""
    if bits is not None:
        bits = _check_bits(bits, allow_none=False)
        if type(clip) is not str and type(clip) is not float and isinstance(clip, numbers.Real) \
                and not isinstance(clip, bool):
            clip = float(clip)
        if _common_clip_params(clip, bits) is None:
            if not isinstance(clip, (str, float)):
                raise TypeError(f"clip must be a law name or a negative float, got {type(clip).__name__}")
            raise ValueError(f"softmax_into takes a published law ('gauss', 'laplace' for bits 2 and 4, 'row') "
                             f"or a finite negative float as clip, got {clip!r}")
    result = _core.softmax_into(x, out, bits, clip, _check_floor(floor), threads)
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

    The same range choice and arithmetic as :func:`softmax` (see there for
    ``clip`` and ``floor``); ``softmax(x, bits, ...)`` equals
    ``table[..., codes]`` on unmasked entries, bit for bit.  ``backend``: as
    for :func:`softmax`.
    """
    if backend is not None:
        with call_backend(backend):
            return quantize(x, bits, axis=axis, clip=clip, floor=floor)
    arr = _check_scores(x)
    bits = _check_bits(bits, allow_none=False)
    axis = _check_axis(axis, arr.ndim)
    floor = _check_floor(floor)
    rows = _rows(arr, axis)
    mode, slope, intercept, static_lo = _clip_params(clip, bits, floor, rows)
    codes = np.empty(rows.shape, np.uint8)
    lo = np.empty(rows.shape[0], np.float32)
    table = np.empty((rows.shape[0], 1 << bits), np.float32)
    _core.quantize_codes(rows, codes, lo, table, bits, mode, slope, intercept, static_lo, floor)
    batch_shape = _batch_shape(arr.shape, axis)
    return QuantizedRows(
        codes=_restore_axis(codes, batch_shape, axis),
        lo=lo.reshape(batch_shape),
        table=table.reshape(batch_shape + (1 << bits,)),
        bits=bits,
        axis=axis,
    )


def score_stats(x, *, axis: int = -1, backend: Optional[str] = None) -> dict:
    """Statistics of the shifted scores ``t = x - rowmax`` pooled over the whole call.

    Returns a dict: ``sigma`` (standard deviation with Bessel's correction, 0
    for fewer than two scores), ``min`` (the pooled minimum of ``t``, i.e.
    ``lo_obs``), ``mean``, ``mean_abs_dev`` (mean ``|t - mean t|``, the Laplace
    law's ``b``), ``count`` (unmasked scores), ``invalid_rows`` (rows with
    NaN/+inf, left out).  Masked (``-inf``) entries take no part.  With no
    unmasked score, the float fields are NaN.  ``backend``: as for
    :func:`softmax` (the statistics are the same on every backend).
    """
    if backend is not None:
        with call_backend(backend):
            return score_stats(x, axis=axis)
    arr = _check_scores(x)
    axis = _check_axis(axis, arr.ndim)
    return _core.score_stats(_rows(arr, axis))
