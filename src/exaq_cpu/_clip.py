"""Clip argument -> the C driver's range parameters, solver modes included.

Above ``_args`` (the laws, the common cases) and ``clipping`` (the solver-derived
modes, which need the call's statistics first); below the public modules.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core
from ._args import _LAW_PARAMS, LAPLACE_LAWS, ClipArg, common_clip_params


def clip_params(clip: ClipArg, bits: int, floor: str, rows: np.ndarray):
    """(mode, slope, intercept, static_lo) for the C driver."""
    params = common_clip_params(clip, bits)  # the common cases first
    if params is not None:
        return params
    if clip is None or clip == "naive":  # "naive": clipping.CLIP_MODES' name for no clip
        return "none", 0.0, 0.0, 0.0
    if isinstance(clip, str):
        if clip in ("gauss", "row"):
            return _LAW_PARAMS[(clip, bits)]
        if clip == "laplace":
            if bits not in LAPLACE_LAWS:
                raise ValueError(f"clip='laplace' has published laws for bits 2 and 4 only, got bits={bits}")
            return _LAW_PARAMS[("laplace", bits)]
        from . import clipping  # the analysis package, loaded only for its modes

        if clip not in clipping.STATS_CLIP_MODES:
            valid = ("gauss", "laplace", "row", "naive") + tuple(clipping.STATS_CLIP_MODES)
            raise ValueError(f"unknown clip mode {clip!r}; valid: {', '.join(valid)}, None or a negative float")
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
