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
    last value is held.

    Vectorized over ``sigma``; returns the raw (negative) clip ``C``.
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
    bits only.  Returns ``-inf`` for ``"naive"``.
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
    """
    lo_obs = float(stats["min"])
    c = clip_law(mode, stats, bits, floor)
    return max(lo_obs, c)
