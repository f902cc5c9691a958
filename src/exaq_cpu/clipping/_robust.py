"""Robustness of the analytic clip on non-Gaussian rows (docs/clipping.md)."""

from __future__ import annotations

import math

import numpy as np

from ._calibrator import numpy_score_stats
from ._model import (
    _check_bits,
    _check_floor,
    _check_n,
    _check_sigma,
    gauss_clip,
    optimal_clip,
)

__all__ = ["DISTRIBUTIONS", "empirical_exp_mse", "robustness_study", "sample_rows"]

#: Row distributions of the study, each scaled to standard deviation sigma.
DISTRIBUTIONS = ("gaussian", "uniform", "laplace", "bimodal", "student_t3")


def sample_rows(dist: str, sigma: float, rows: int, n: int, rng) -> np.ndarray:
    """``rows x n`` i.i.d. logits of distribution ``dist`` with standard deviation ``sigma``.

    ``bimodal`` is ``0.5 N(-0.9s, 0.19 s^2) + 0.5 N(0.9s, 0.19 s^2)``;
    ``student_t3`` is Student's t with 3 degrees of freedom (infinite kurtosis).
    Every distribution has mean 0.  The rows are not shifted by their maximum.

    Parameters
    ----------
    dist : str
        One of :data:`DISTRIBUTIONS`: ``"gaussian"``, ``"uniform"``,
        ``"laplace"``, ``"bimodal"``, ``"student_t3"``.
    sigma : float
        Standard deviation of the distribution (not checked).
    rows, n : int
        The shape drawn.
    rng : numpy.random.Generator
        The source of randomness.

    Returns
    -------
    numpy.ndarray of float64
        Shape ``(rows, n)``.

    Raises
    ------
    ValueError
        For an unknown ``dist``.

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import clipping
    >>> y = clipping.sample_rows("laplace", 2.0, 100, 1000, np.random.default_rng(0))
    >>> y.shape, bool(abs(y.std() - 2.0) < 0.05)
    ((100, 1000), True)
    """
    shape = (rows, n)
    if dist == "gaussian":
        y = rng.standard_normal(shape)
    elif dist == "uniform":
        y = rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), shape)
    elif dist == "laplace":
        y = rng.laplace(0.0, 1.0 / math.sqrt(2.0), shape)
    elif dist == "bimodal":
        sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        y = 0.9 * sign + math.sqrt(0.19) * rng.standard_normal(shape)
    elif dist == "student_t3":
        y = rng.standard_t(3.0, shape) / math.sqrt(3.0)
    else:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    return sigma * y


def empirical_exp_mse(t: np.ndarray, clips, bits: int, floor: str = "exp") -> np.ndarray:
    """Mean over all entries of ``(exp(t) - exp(Q(t)))**2`` for shifted rows ``t``.

    Uses the library's dynamic range ``lo = max(lo_obs, C)`` with ``lo_obs`` the
    pooled minimum of ``t``, then the EXAQ quantizer on ``[lo, 0]`` in float64
    (round half to even).  The arguments are not checked.

    Parameters
    ----------
    t : numpy.ndarray
        Shifted scores (every row's maximum 0, all entries ``<= 0``), any shape.
    clips : float or array_like
        One or more raw clips ``C < 0``.
    bits : int
        Bits per code (2..8).
    floor : {"exp", "zero"}, default "exp"
        Value of code 0 (``"zero"``: 0; anything else: ``exp(lo)``).

    Returns
    -------
    numpy.ndarray of float64
        One mean squared error per clip, shape ``(len(clips),)`` (``(1,)`` for
        a scalar).

    See Also
    --------
    expected_exp_mse : the expectation for Gaussian rows.

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import clipping
    >>> t = np.array([[0.0, -1.0, -2.0, -5.0]])
    >>> clipping.empirical_exp_mse(t, [-1.0, -5.0, -10.0], 2).round(5)   # -10 is below min t: same as -5
    array([0.04612, 0.00873, 0.00873])
    """
    L = (1 << bits) - 1
    lo_obs = float(t.min())
    et = np.exp(t)
    out = []
    for c in np.atleast_1d(clips):
        lo = max(lo_obs, float(c))
        q = np.rint((np.clip(t, lo, 0.0) - lo) * (L / -lo))
        e = np.exp(lo + q * (-lo / L))
        if floor == "zero":
            e[q == 0] = 0.0
        out.append(np.mean((et - e) ** 2))
    return np.array(out)


def robustness_study(bits=2, sigmas=(2.0, 5.0), *, n=1024, rows=256, seed=0, floor="exp"):
    """Analytic clip vs grid-searched best clip on non-Gaussian rows.

    For each distribution of :data:`DISTRIBUTIONS` and each sigma, rows are
    drawn, shifted by their maximum, and the pooled statistics computed as
    the library does (:func:`numpy_score_stats`).  The analytic clip is
    :func:`optimal_clip` at the measured sigma; the best clip minimizes the
    empirical exp-MSE over a fine grid.  ``docs/clipping.md`` section 5 shows
    a full run.  The defaults take a few seconds.

    Parameters
    ----------
    bits : int, default 2
        Bits per code, 2..8.
    sigmas : sequence of float, default (2.0, 5.0)
        Standard deviations to draw the rows with, all ``> 0``.
    n : int, keyword-only, default 1024
        Row length, ``>= 2``.
    rows : int, keyword-only, default 256
        Rows drawn per distribution and sigma.
    seed : int, keyword-only, default 0
        Seed of the ``numpy.random.default_rng`` the rows come from.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0.

    Returns
    -------
    list of dict
        One dict per distribution and sigma (distributions in the order of
        :data:`DISTRIBUTIONS`), with ``dist``, ``sigma``, ``measured_sigma``,
        ``clip_analytic``, ``clip_best`` and ``ratio_analytic`` (=
        ``mse(analytic)/mse(best)``), and for bits 2..4 also ``clip_gauss``
        and ``ratio_gauss`` (= ``mse(gauss law)/mse(best)``).

    Raises
    ------
    TypeError
        If ``sigmas`` is not numeric or ``bits`` is not an int.
    ValueError
        For ``bits`` not in 2..8, ``n`` not an integer ``>= 2``, a sigma
        ``<= 0``, or an unknown ``floor``.

    See Also
    --------
    sample_rows, empirical_exp_mse, optimal_clip

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> study = clipping.robustness_study(2, (2.0,), n=64, rows=16)
    >>> [row["dist"] for row in study]
    ['gaussian', 'uniform', 'laplace', 'bimodal', 'student_t3']
    >>> sorted(study[0])
    ['clip_analytic', 'clip_best', 'clip_gauss', 'dist', 'measured_sigma',
     'ratio_analytic', 'ratio_gauss', 'sigma']
    """
    bits = _check_bits(bits)
    n = _check_n(n)
    floor = _check_floor(floor)
    _check_sigma(sigmas)
    rng = np.random.default_rng(seed)
    out = []
    for dist in DISTRIBUTIONS:
        for s in np.atleast_1d(sigmas):
            y = sample_rows(dist, float(s), rows, n, rng)
            t = y - y.max(axis=1, keepdims=True)
            st = numpy_score_stats(t)
            c_an = optimal_clip(st["sigma"], bits, n=n, floor=floor)
            grid = np.linspace(max(st["min"], -60.0), -0.02, 400)
            errs = empirical_exp_mse(t, grid, bits, floor)
            i = int(np.argmin(errs))
            fine = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)], 41)
            ferr = empirical_exp_mse(t, fine, bits, floor)
            j = int(np.argmin(ferr))
            c_best, e_best = float(fine[j]), float(ferr[j])
            e_an = float(empirical_exp_mse(t, [c_an], bits, floor)[0])
            row = {"dist": dist, "sigma": float(s), "measured_sigma": st["sigma"],
                   "clip_analytic": c_an, "clip_best": c_best, "ratio_analytic": e_an / e_best}
            if bits in (2, 3, 4):
                c_g = gauss_clip(st["sigma"], bits)
                row["clip_gauss"] = c_g
                row["ratio_gauss"] = float(empirical_exp_mse(t, [c_g], bits, floor)[0]) / e_best
            out.append(row)
    return out
