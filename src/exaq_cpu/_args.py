"""The lowest Python layer: argument checks, array layout, and the clip laws.

Every public module (``_api``, ``packed``, ``lutgemm``, ``clipping``) checks its
arguments and reshapes its arrays with these, so one rule holds one meaning
everywhere and no public module imports another to borrow a helper.  Errors
follow docs/errors.md: a wrong type is a TypeError, a wrong value a ValueError,
each naming the argument.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import numpy as np

from . import _core

#: Published linear clipping laws of the EXAQ paper, ``C = -a*s - c`` with
#: ``s`` = sigma (gauss) or mean ``|t - mean t|`` (laplace), keyed by bits -> (a, c)
#: (docs/semantics.md, section 3.2).  The one copy: ``clipping`` and the C
#: fast entries take theirs from here.
GAUSS_LAWS = {2: (1.66, 1.85), 3: (1.75, 2.06), 4: (1.83, 2.27)}
LAPLACE_LAWS = {2: (4.01, 1.77), 4: (6.82, 0.15)}
#: code widths of the softmax / packed kernels (c/exaq.h EXAQ_MIN_BITS..EXAQ_MAX_BITS)
KERNEL_BITS = (2, 3, 4)
#: floors of the exponent table (docs/semantics.md, section 2)
FLOORS = ("exp", "zero")


def _driver_law(law):
    """(a, c) of ``C = -a*s - c`` as the C driver's (slope, intercept) of ``C = slope*s + intercept``."""
    a, c = law
    return -a, -c


_core.set_published_laws({b: _driver_law(v) for b, v in GAUSS_LAWS.items()},
                         {b: _driver_law(v) for b, v in LAPLACE_LAWS.items()})  # the C fast entries' copy
# (mode, bits) -> the C driver's parameters, for the modes that are a published law
_LAW_PARAMS = {**{(mode, b): (mode,) + _driver_law(law) + (0.0,)
                  for mode in ("gauss", "row") for b, law in GAUSS_LAWS.items()},
               **{("laplace", b): ("laplace",) + _driver_law(law) + (0.0,) for b, law in LAPLACE_LAWS.items()}}

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

ClipArg = Union[str, float, None]


def check_bits(bits, lo: int = 2, hi: int = 4, allow_none: bool = False, argument: str = "bits") -> Optional[int]:
    """``bits`` as an int in ``lo..hi`` (or None where allowed).  The one bits
    check: the softmax kernels take 2..4, BCQ weights 1..4, the clip analysis 2..8."""
    if type(bits) is int and lo <= bits <= hi:
        return bits
    if bits is None and allow_none:
        return None
    choices = f"{lo}..{hi}" + (" or None" if allow_none else "")
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):  # docs/errors.md
        raise TypeError(f"{argument} must be an int in {choices}, got {type(bits).__name__} {bits!r}")
    if not lo <= int(bits) <= hi:
        raise ValueError(f"{argument} must be in {choices}, got {bits!r}")
    return int(bits)


def check_floor(floor) -> str:
    if floor not in FLOORS:
        raise ValueError(f"floor must be one of {FLOORS}, got {floor!r}")
    return floor


def check_scores(x) -> np.ndarray:
    """``x`` as an array of float scores: integers and booleans are computed as
    float32 (as scipy.special.softmax computes them as floats); anything else
    that is not a float is a TypeError."""
    arr = np.asarray(x)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float32)
    elif arr.dtype.kind != "f":
        raise TypeError(f"x must hold real (float, integer or bool) scores, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension")
    return arr


def check_axis(axis, ndim: int) -> int:
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, without the ABC checks
        return axis % ndim
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return axis % ndim


def to_rows(arr: np.ndarray, axis: int, dtype=np.float32) -> np.ndarray:
    """(rows, n) C-contiguous, aligned view or copy of ``arr`` in ``dtype``, ``axis`` last
    (the kernels read whole elements: a buffer off its element grid is copied)."""
    flags = arr.flags
    if arr.ndim == 2 and axis == 1 and arr.dtype == dtype and flags.c_contiguous and flags.aligned:
        return arr
    moved = arr if axis == arr.ndim - 1 else np.moveaxis(arr, axis, -1)
    flat = np.require(moved, dtype=dtype, requirements=("C", "A"))
    return flat.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])


def restore_axis(rows: np.ndarray, batch_shape: tuple, axis: int) -> np.ndarray:
    """Inverse of :func:`to_rows`: (rows, n) back to the caller's layout (a view)."""
    shaped = rows.reshape(batch_shape + (rows.shape[-1],))
    return shaped if axis == len(batch_shape) else np.moveaxis(shaped, -1, axis)


def batch_shape_of(shape: tuple, axis: int) -> tuple:
    return tuple(shape[:axis]) + tuple(shape[axis + 1:])


def common_clip_params(clip, bits: int):
    """The C driver's parameters for a published law (by name) or a static float
    clip, with one lookup; None for anything else."""
    if type(clip) is str:
        return _LAW_PARAMS.get((clip, bits))
    if type(clip) is float and clip < 0 and clip != -math.inf:
        return "static", 0.0, 0.0, clip
    return None


def check_out(out, shape, dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def result_dtype(dtype, out=None) -> np.dtype:
    """The softmax's result dtype: float32 unless ``dtype`` asks for float16/float64,
    or (``dtype`` None) an ``out`` array of another dtype says so (checked the same way)."""
    if dtype is None and isinstance(out, np.ndarray):
        dtype = out.dtype
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype {dtype!r} is not a NumPy dtype") from err
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float16, float32 or float64, got {dt}")
    return dt
