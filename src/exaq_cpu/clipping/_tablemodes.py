"""Shipped sigma -> clip tables and the ``clip=`` modes built on them."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from ._model import (
    _check_bits,
    _check_floor,
    _check_n,
    _check_sigma,
    gauss_clip,
    laplace_clip,
    optimal_clip,
)
from ._row import ROW_OBJECTIVES

__all__ = [
    "BEST_MODE",
    "CLIP_MODES",
    "TABLE_OBJECTIVES",
    "clip_from_stats",
    "clip_law",
    "optimal_clip_table",
    "table_clip",
]

#: objectives with a shipped table: the per-entry exp-MSE and the whole-row ones.
TABLE_OBJECTIVES = ("exp_mse",) + tuple("softmax_" + k for k in ROW_OBJECTIVES)

#: The mode recommended for model accuracy (see docs/clipping.md, "Beyond the paper").
BEST_MODE = "softmax_mse"

#: Every mode accepted by :func:`clip_from_stats` / :func:`clip_law`.
#: ``"table"`` is the exp-MSE table; ``"accurate"`` is an alias of :data:`BEST_MODE`.
CLIP_MODES = ("naive", "gauss", "laplace", "table") + TABLE_OBJECTIVES + ("accurate",)


@functools.cache
def _shipped():
    from . import _tables
    return _tables


def _check_objective(objective) -> str:
    if objective not in TABLE_OBJECTIVES:
        raise ValueError(f"objective must be one of {TABLE_OBJECTIVES}, got {objective!r}")
    return objective


@functools.cache
def _table(bits: int, floor: str, objective: str):
    tb = _shipped()
    if objective == "exp_mse":
        s, c = tb.SIGMA_EXP, tb.EXP_MSE[(floor, bits)]
    else:
        s, c = tb.SIGMA_ROW, tb.ROW[(objective[len("softmax_"):], floor, bits)]
    s = np.array(s, dtype=np.float64)
    c = np.array(c, dtype=np.float64)
    s.setflags(write=False)
    c.setflags(write=False)
    return s, c


def optimal_clip_table(bits, *, floor="exp", objective="exp_mse", n=1024):
    """Sigma -> optimal clip table (sigma 0..10) as two read-only arrays ``(sigmas, clips)``.

    ``objective="exp_mse"`` (default) is :func:`optimal_clip` on sigma = 0, 0.1,
    ..., 10; ``"softmax_mse"``, ``"softmax_kl"``, ``"softmax_l1"`` are the
    whole-row objectives of :func:`optimal_softmax_clip` on sigma = 0, 0.5, ...,
    10.  Both are shipped precomputed for ``n = 1024`` (regenerate with
    ``python -m exaq_cpu.clipping regen-tables``).  For ``objective="exp_mse"``
    and another ``n`` the table is computed on the fly (about 1-4 s).

    Parameters
    ----------
    bits : int
        Bits per code, 2..8.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0 the table is for.
    objective : {"exp_mse", "softmax_mse", "softmax_kl", "softmax_l1"}, keyword-only, default "exp_mse"
        What the clips minimize.
    n : int, keyword-only, default 1024
        Row length, ``>= 2``; other than 1024 only with ``"exp_mse"``.

    Returns
    -------
    sigmas : numpy.ndarray of float64
        The grid of sigma values (read-only for the shipped tables).
    clips : numpy.ndarray of float64
        The optimal clip at each, ``0`` at ``sigma = 0``.

    Raises
    ------
    TypeError
        If ``bits`` is not an int.
    ValueError
        For ``bits`` not in 2..8, an unknown ``floor`` or ``objective``, ``n``
        not an integer ``>= 2``, or a whole-row objective with ``n != 1024``.

    See Also
    --------
    table_clip : interpolates it.
    optimal_clip, optimal_softmax_clip : how the tables were computed.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> sigmas, clips = clipping.optimal_clip_table(2)
    >>> sigmas.size, float(sigmas[20]), float(clips[20])     # sigma = 2
    (101, 2.0, -4.3224)
    >>> clipping.optimal_clip_table(2, objective="softmax_kl")[0][:3]
    array([0. , 0.5, 1. ])
    """
    bits = _check_bits(bits)
    floor = _check_floor(floor)
    objective = _check_objective(objective)
    n = _check_n(n)
    if n != _shipped().N:
        if objective != "exp_mse":
            raise ValueError(f"whole-row tables are shipped for n={_shipped().N} only")
        s = np.round(np.arange(0.0, 10.0001, 0.1), 4)
        return s, optimal_clip(s, bits, n=n, floor=floor)
    return _table(bits, floor, objective)


def table_clip(sigma, bits, *, floor="exp", objective="exp_mse"):
    """Interpolate the shipped table at ``sigma`` (linear).

    Past sigma = 10 the last segment is continued if it slopes down, else the
    last value is held.  Vectorized over ``sigma``; returns the raw (negative)
    clip ``C``, before the softmax's ``max(lo_obs, C)``.  Cheap: no solver runs.

    Parameters
    ----------
    sigma : float or array_like
        Standard deviation(s) of the shifted scores, ``>= 0``.
    bits : int
        Bits per code, 2..8.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0 the table is for.
    objective : {"exp_mse", "softmax_mse", "softmax_kl", "softmax_l1"}, keyword-only, default "exp_mse"
        Which shipped table (``n = 1024``).

    Returns
    -------
    float or numpy.ndarray
        ``C``: a float for a scalar ``sigma``, else a float64 array of its shape
        (0 at ``sigma = 0``).

    Raises
    ------
    TypeError
        If ``sigma`` is not a real number (or array of them), or ``bits`` is
        not an int.
    ValueError
        For ``sigma < 0`` or not finite, ``bits`` not in 2..8, an unknown
        ``floor`` or ``objective``.

    See Also
    --------
    optimal_clip_table : the tables themselves.
    clip_law : the clip of any ``clip=`` mode.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> clipping.table_clip(2.0, 2)                         # optimal_clip(2.0, 2) to 1e-4
    -4.3224
    >>> clipping.table_clip(2.0, 2, objective="softmax_mse")
    -6.2305
    >>> clipping.table_clip([1.0, 2.0, 12.0], 2).shape
    (3,)
    """
    bits = _check_bits(bits)
    floor = _check_floor(floor)
    objective = _check_objective(objective)
    sg = _check_sigma(sigma, allow_zero=True)
    s, c = _table(bits, floor, objective)
    r = np.interp(sg, s, c)
    far = sg > s[-1]
    if np.any(far):
        # continue the last segment only if it goes down (wider clip for wider
        # scores); the zero-floor and row curves flatten or turn up: hold them
        slope = min((c[-1] - c[-2]) / (s[-1] - s[-2]), 0.0)
        r = np.where(far, c[-1] + slope * (sg - s[-1]), r)
    return float(r) if r.ndim == 0 else r


def _resolve(mode: str) -> str:
    if mode == "accurate":
        return BEST_MODE
    if mode == "table":
        return "exp_mse"
    return mode


def clip_law(mode: str, stats: Mapping[str, float], bits: int, floor: str = "exp") -> float:
    """Raw clip ``C`` of a mode from statistics, *before* ``max(lo_obs, C)``.

    Needs ``stats["sigma"]`` (all modes but ``"naive"``/``"laplace"``),
    ``stats["mean_abs_dev"]`` (``"laplace"``), ``stats["min"]`` (``"naive"``).
    ``"gauss"`` with bits 5..8 uses the extrapolated law
    (``gauss_clip(..., extrapolate=True)``); ``"laplace"`` exists for 2 and 4
    bits only.  Returns ``-inf`` for ``"naive"``.  A NaN or negative sigma
    (no spread) counts as 0.

    Parameters
    ----------
    mode : str
        One of :data:`CLIP_MODES`.
    stats : mapping
        Statistics as :func:`exaq_cpu.score_stats` returns them.
    bits : int
        Bits per code, 2..8.
    floor : {"exp", "zero"}, default "exp"
        Value of code 0 (selects the table of the table modes).

    Returns
    -------
    float
        The raw clip ``C`` (negative, 0 for the table modes at sigma 0, or
        ``-inf`` for ``"naive"``).

    Raises
    ------
    KeyError
        If ``stats`` lacks the key the mode needs.
    TypeError
        If ``bits`` is not an int.
    ValueError
        For an unknown ``mode`` or ``floor``, ``bits`` not in 2..8, or
        ``"laplace"`` with bits other than 2 and 4.

    See Also
    --------
    clip_from_stats : with the ``max(lo_obs, C)`` applied.
    gauss_clip, laplace_clip, table_clip

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> clipping.clip_law("gauss", {"sigma": 2.0}, 2)
    -5.17
    >>> clipping.clip_law("accurate", {"sigma": 2.0}, 2)    # alias of BEST_MODE = "softmax_mse"
    -6.2305
    >>> clipping.clip_law("naive", {}, 2)
    -inf
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"mode must be one of {CLIP_MODES}, got {mode!r}")
    bits = _check_bits(bits)
    floor = _check_floor(floor)
    mode = _resolve(mode)
    if mode == "naive":
        return -math.inf
    if mode == "laplace":
        return laplace_clip(max(float(stats["mean_abs_dev"]), 0.0), bits)
    sigma = float(stats["sigma"])
    if not math.isfinite(sigma):       # fewer than 2 unmasked scores: no spread
        sigma = 0.0
    sigma = max(sigma, 0.0)
    if mode == "gauss":
        return gauss_clip(sigma, bits, extrapolate=True)
    return table_clip(sigma, bits, floor=floor, objective=mode)


def clip_from_stats(mode: str, stats: Mapping[str, float], bits: int, floor: str = "exp") -> float:
    """Effective low end ``lo = max(stats["min"], C)`` of the quantization range.

    ``mode`` is one of :data:`CLIP_MODES`:

    - ``"naive"``: no clipping, ``lo = stats["min"]``;
    - ``"gauss"`` / ``"laplace"``: the published linear laws (docs/semantics.md, section 3.2);
    - ``"table"`` (alias ``"exp_mse"``): the exp-MSE optimum table for ``floor``;
    - ``"softmax_mse"``, ``"softmax_kl"``, ``"softmax_l1"``: whole-row objective
      tables for ``floor``;
    - ``"accurate"``: alias of :data:`BEST_MODE`.

    ``stats`` is the dict of :func:`exaq_cpu.score_stats` (keys ``"sigma"``,
    ``"min"``, ``"mean_abs_dev"``...).  The result is ``<= 0`` (``0.0`` only for
    a degenerate pool with no spread); it is cheap (a table interpolation).
    This is the ``lo`` that ``softmax(x, bits, clip=mode)`` runs with as a
    static clip for the modes of ``STATS_CLIP_MODES``.

    Parameters
    ----------
    mode : str
        One of :data:`CLIP_MODES`.
    stats : mapping
        Statistics as :func:`exaq_cpu.score_stats` returns them (``"min"``
        always, and what :func:`clip_law` needs for the mode).
    bits : int
        Bits per code, 2..8.
    floor : {"exp", "zero"}, default "exp"
        Value of code 0.

    Returns
    -------
    float
        ``lo``, ``<= 0``.

    Raises
    ------
    KeyError
        If ``stats`` lacks a needed key.
    TypeError, ValueError
        As :func:`clip_law`.

    See Also
    --------
    clip_law : ``C`` alone.
    exaq_cpu.score_stats : the statistics.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> from exaq_cpu import clipping
    >>> scores = np.array([[2.0, 1.0, 0.0, -3.0]], np.float32)
    >>> stats = exaq_cpu.score_stats(scores)                 # sigma 2.16, min -5
    >>> clipping.clip_from_stats("naive", stats, 2)
    -5.0
    >>> clipping.clip_from_stats("gauss", stats, 2)           # C = -5.436 lies below min t
    -5.0
    >>> lo = clipping.clip_from_stats("table", stats, 2)
    >>> round(lo, 3)
    -4.419
    >>> bool(np.array_equal(exaq_cpu.softmax(scores, 2, clip="table"), exaq_cpu.softmax(scores, 2, clip=lo)))
    True
    """
    lo_obs = float(stats["min"])
    c = clip_law(mode, stats, bits, floor)
    return max(lo_obs, c)
