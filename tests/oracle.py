"""Float64 NumPy reference of EXAQ softmax (docs/semantics.md, sections 2-4), written
from the method in real arithmetic, not from the kernels, with the range finishing of
section 4.3: a range narrower than 2**-64 is widened to it, and ``lo`` is at least -FLT_MAX.
"""
import numpy as np

GAUSS = {2: (-1.66, -1.85), 3: (-1.75, -2.06), 4: (-1.83, -2.27)}
LAPLACE = {2: (-4.01, -1.77), 4: (-6.82, -0.15)}
MIN_RANGE = 2.0 ** -64
FLT_MAX = float(np.finfo(np.float32).max)


def _finish_lo(lo):
    lo = np.minimum(lo, -MIN_RANGE)
    return np.maximum(lo, -FLT_MAX)


def reference(x, bits, clip="gauss", floor="exp"):
    """x: (rows, n) array.  Returns dict with codes, v (unrounded), lo, probs (float64)."""
    x = np.asarray(x, dtype=np.float64)
    rows, n = x.shape
    masked = x == -np.inf
    invalid = np.any(np.isnan(x) | (x == np.inf), axis=1)
    live = ~invalid & np.any(~masked, axis=1)
    safe = np.where(masked | ~live[:, None], np.nan, x)
    m = np.full(rows, np.nan)
    if live.any():
        m[live] = np.nanmax(safe[live], axis=1)
    t = x - m[:, None]
    use = ~masked & live[:, None]
    pool = t[use]
    levels = 2 ** bits - 1

    def std(a):
        return float(np.std(a, ddof=1)) if a.size >= 2 else 0.0

    if clip == "gauss" or clip == "laplace" or clip is None:
        if clip is None:
            lo_val = pool.min() if pool.size else -MIN_RANGE
        elif clip == "gauss":
            a, c = GAUSS[bits]
            lo_val = max(pool.min(), a * std(pool) + c) if pool.size else -MIN_RANGE
        else:
            a, c = LAPLACE[bits]
            b = float(np.mean(np.abs(pool - pool.mean()))) if pool.size else 0.0
            lo_val = max(pool.min(), a * b + c) if pool.size else -MIN_RANGE
        lo = np.full(rows, lo_val)
    elif clip == "row":
        a, c = GAUSS[bits]
        lo = np.full(rows, np.nan)
        for r in np.flatnonzero(live):
            tr = t[r][use[r]]
            lo[r] = max(tr.min(), a * std(tr) + c)
    else:
        lo = np.full(rows, float(clip))
    lo = _finish_lo(lo)

    clipped = np.clip(t, lo[:, None], 0.0)
    v = (clipped - lo[:, None]) * levels / (-lo[:, None])
    codes = np.rint(v)
    codes = np.where(use, codes, 0).astype(np.int64)
    k = np.arange(levels + 1)
    e = np.exp(lo[:, None] + k[None, :] * (-lo[:, None]) / levels)
    e[:, levels] = 1.0
    if floor == "zero":
        e[:, 0] = 0.0
    contrib = np.where(use, np.take_along_axis(e, codes, axis=1), 0.0)
    total = contrib.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = contrib / total[:, None]
    probs[~live] = 0.0
    probs[invalid] = np.nan
    return {"codes": codes, "v": v, "lo": lo, "probs": probs, "use": use, "live": live,
            "invalid": invalid}


def exact_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    masked = x == -np.inf
    invalid = np.any(np.isnan(x) | (x == np.inf), axis=1)
    live = ~invalid & np.any(~masked, axis=1)
    m = np.where(live, np.max(np.where(masked, -np.inf, np.nan_to_num(x, nan=-np.inf)), axis=1), 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.where(masked, 0.0, np.exp(x - m[:, None]))
        p = e / e.sum(axis=1, keepdims=True)
    p[~live] = 0.0
    p[invalid] = np.nan
    return p


def near_tie(v, tol=1e-4):
    """Entries whose unrounded code is within tol of a rounding boundary (k + 1/2)."""
    frac = v - np.floor(v)
    return np.abs(frac - 0.5) < tol
