"""Whole-row objectives: error of the *normalized* softmax output.

The exp-MSE of :func:`expected_exp_mse` looks at one entry at a time.  What a
model sees is the normalized row ``p = softmax(y)`` versus the EXAQ output
``p_hat``; with ``floor="exp"`` every one of the ``n`` entries of a row adds at
least ``exp(lo)`` to the denominator, which the per-entry model does not see.

These objectives depend on the whole row jointly (through the sum), so they are
estimated by Monte Carlo with *common random numbers* (a fixed seed and the same
standardized rows for every clip), which makes the objective a deterministic,
nearly smooth function of the clip.  Their tables are precomputed offline
(``python -m exaq_cpu.clipping regen-tables``) and shipped in ``_tables.py``.
"""

from __future__ import annotations

import functools

import numpy as np

from ._model import _check_bits, _check_clip, _check_floor, _check_n, _check_sigma

__all__ = ["ROW_OBJECTIVES", "expected_softmax_error", "optimal_softmax_clip"]

#: ``"mse"``: sum over the row of ``(p - p_hat)**2``;
#: ``"kl"``: ``KL(p_hat || p) = sum p_hat*log(p_hat/p)`` (finite for both floors;
#: ``KL(p || p_hat)`` is infinite as soon as ``floor="zero"`` drops an entry);
#: ``"l1"``: ``sum |p - p_hat|`` (bounds the attention-output error
#: ``|(p - p_hat) @ V| <= l1 * max|V|``).
ROW_OBJECTIVES = ("mse", "kl", "l1")


@functools.lru_cache(maxsize=4)
def _rows(n: int, rows: int, seed: int) -> np.ndarray:
    """Standardized shifted rows ``Z - max(Z)`` (read-only, cached)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, n))
    z -= z.max(axis=1, keepdims=True)
    z.setflags(write=False)
    return z


def _row_errors(t: np.ndarray, clips: np.ndarray, bits: int, floor: str) -> np.ndarray:
    """Objective values, shape (len(clips), 3) for (mse, kl, l1), averaged over rows."""
    L = (1 << bits) - 1
    logS = np.log(np.exp(t).sum(axis=1, keepdims=True))
    logp = t - logS
    p = np.exp(logp)
    out = np.empty((clips.size, 3))
    for i, c in enumerate(clips):
        step = -c / L
        q = np.rint((np.maximum(t, c) - c) / step)
        v = c + q * step
        e = np.exp(v)
        if floor == "zero":
            e[q == 0] = 0.0
        S = e.sum(axis=1, keepdims=True)
        ph = e / S
        d = p - ph
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_terms = np.where(ph > 0, ph * (v - np.log(S) - logp), 0.0)
        out[i, 0] = np.mean(np.sum(d * d, axis=1))
        out[i, 1] = np.mean(np.sum(kl_terms, axis=1))
        out[i, 2] = np.mean(np.sum(np.abs(d), axis=1))
    return out


def expected_softmax_error(clip, sigma, bits, *, n=1024, floor="exp", objective="kl",
                           rows=512, seed=0):
    """Monte-Carlo estimate of a whole-row softmax error for static clip ``clip``.

    Rows of ``n`` i.i.d. ``N(0, sigma**2)`` logits (``rows`` of them, fixed
    ``seed``) are quantized with the EXAQ quantizer on ``[clip, 0]`` and
    normalized; the returned value is the mean over rows of the chosen
    ``objective`` (see :data:`ROW_OBJECTIVES`).  The same standardized rows
    (cached per ``n``, ``rows``, ``seed``) serve every clip, so the result is
    a deterministic, nearly smooth function of ``clip``.

    Parameters
    ----------
    clip : float or array_like
        Static clip(s) ``C < 0``.
    sigma : float
        Standard deviation of the logits, ``> 0`` (a scalar).
    bits : int
        Bits per code, 2..8.
    n : int, keyword-only, default 1024
        Row length, ``>= 2``.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0.
    objective : {"kl", "mse", "l1"}, keyword-only, default "kl"
        ``"mse"``: sum over the row of ``(p - p_hat)**2``; ``"kl"``:
        ``KL(p_hat || p)``; ``"l1"``: ``sum |p - p_hat|``.
    rows : int, keyword-only, default 512
        Rows drawn.
    seed : int, keyword-only, default 0
        Seed of the ``numpy.random.default_rng`` the rows come from.

    Returns
    -------
    float or numpy.ndarray
        A float for a scalar ``clip``, else a float64 array of its shape.

    Raises
    ------
    TypeError
        If ``sigma`` is not a real number (an array of several values
        included), or ``bits`` is not an int.
    ValueError
        For ``sigma <= 0``, a clip ``>= 0`` or not finite, ``bits`` not in
        2..8, ``n`` not an integer ``>= 2``, an unknown ``floor`` or
        ``objective``.

    See Also
    --------
    optimal_softmax_clip : its minimizers.
    expected_exp_mse : the per-entry objective.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> err = clipping.expected_softmax_error([-2.0, -5.0], 2.0, 2, n=256, rows=64, objective="l1")
    >>> err.shape, bool(err[1] < err[0])                # clipping at -2 loses too much
    ((2,), True)
    """
    bits = _check_bits(bits)
    n = _check_n(n)
    floor = _check_floor(floor)
    s = float(_check_sigma(sigma))
    c = _check_clip(clip)
    if objective not in ROW_OBJECTIVES:
        raise ValueError(f"objective must be one of {ROW_OBJECTIVES}, got {objective!r}")
    t = s * _rows(n, int(rows), int(seed))
    r = _row_errors(t, c.ravel(), bits, floor)[:, ROW_OBJECTIVES.index(objective)]
    return float(r[0]) if c.ndim == 0 else r.reshape(c.shape)


def optimal_softmax_clip(sigma, bits, *, n=1024, floor="exp", rows=512, seed=0,
                         points=48, refine=24):
    """Clips minimizing each row objective, as a dict ``{"mse": C, "kl": C, "l1": C}``.

    A grid of ``points`` clips (denser near 0) brackets each minimum, then a
    uniform grid of ``refine`` points between the bracketing neighbours picks
    it (resolution about ``|C|/(points*refine)``, ~0.02 at sigma = 10).  The
    rows are those of :func:`expected_softmax_error` with the same ``n``,
    ``rows`` and ``seed``; the defaults (which made the shipped tables) take
    about 2 s.

    Parameters
    ----------
    sigma : float
        Standard deviation of the logits, ``> 0`` (a scalar).
    bits : int
        Bits per code, 2..8.
    n : int, keyword-only, default 1024
        Row length, ``>= 2``.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0.
    rows : int, keyword-only, default 512
        Rows drawn.
    seed : int, keyword-only, default 0
        Seed of the rows.
    points : int, keyword-only, default 48
        Coarse grid size.
    refine : int, keyword-only, default 24
        Fine grid size.

    Returns
    -------
    dict
        ``{"mse": C, "kl": C, "l1": C}``, negative floats.

    Raises
    ------
    TypeError
        If ``sigma`` is not a real number (an array of several values
        included), or ``bits`` is not an int.
    ValueError
        For ``sigma <= 0``, ``bits`` not in 2..8, ``n`` not an integer
        ``>= 2`` or an unknown ``floor``.

    See Also
    --------
    expected_softmax_error : the objectives.
    table_clip : the shipped tables of these clips (``objective="softmax_mse"``, ...).

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> best = clipping.optimal_softmax_clip(2.0, 2, n=256, rows=64)
    >>> sorted(best), all(c < 0 for c in best.values())
    (['kl', 'l1', 'mse'], True)
    >>> error = lambda c: clipping.expected_softmax_error(c, 2.0, 2, n=256, rows=64, objective="mse")
    >>> bool(error(best["mse"]) <= min(error(best["mse"] - 1), error(best["mse"] + 1)))
    True
    """
    bits = _check_bits(bits)
    n = _check_n(n)
    floor = _check_floor(floor)
    s = float(_check_sigma(sigma))
    t = s * _rows(n, int(rows), int(seed))
    span = min(float(-t.min()), 40.0) + 0.5
    grid = -span * (np.arange(1, points + 1) / points) ** 1.5
    coarse = _row_errors(t, grid, bits, floor)
    res = {}
    for j, name in enumerate(ROW_OBJECTIVES):
        i = int(np.argmin(coarse[:, j]))
        hi = grid[i - 1] if i > 0 else grid[0] * 0.05
        lo = grid[i + 1] if i + 1 < grid.size else grid[-1]
        fine = np.linspace(lo, hi, refine)
        vals = _row_errors(t, fine, bits, floor)[:, j]
        res[name] = float(fine[int(np.argmin(vals))])
    return res
