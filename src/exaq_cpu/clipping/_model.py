"""Exponent-domain error model of the EXAQ quantizer and its optimal clip.

Everything here is pure NumPy (no compiled core, no SciPy).  See
``docs/clipping.md`` for the derivation in full; the short version is in the
docstring of :func:`expected_exp_mse`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np

from .._args import FLOORS, GAUSS_LAWS, KERNEL_BITS, LAPLACE_LAWS, check_bits, check_floor  # noqa: F401 (re-exported)

__all__ = [
    "FLOORS",
    "GAUSS_LAWS",
    "LAPLACE_LAWS",
    "LawFit",
    "expected_exp_mse",
    "fit_linear_law",
    "gauss_clip",
    "laplace_clip",
    "optimal_clip",
]

# The published laws (``C = -a*s - c``), the kernel widths and the floors have
# one definition, in exaq_cpu._args (docs/semantics.md, section 3.2).
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------

# KERNEL_BITS (exaq_cpu._args): the widths the C kernels take; the analysis
# functions of this module (optimal_clip, the laws, the tables) also model 5..8 bits.


def _check_bits(bits) -> int:
    return check_bits(bits, 2, 8)


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2 (a row needs a non-max entry), got {n}")
    return n


_check_floor = check_floor


def _check_sigma(sigma, *, name="sigma", allow_zero=False) -> np.ndarray:
    raw = np.asarray(sigma)
    if raw.dtype.kind not in "biuf" or raw.dtype.kind == "b":  # '1' would be parsed as 1.0
        raise TypeError(f"{name} must be a real number or array of them, got {type(sigma).__name__}")
    s = raw.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite, got {sigma!r}")
    if allow_zero:
        if np.any(s < 0):
            raise ValueError(f"{name} must be >= 0, got {sigma!r}")
    elif np.any(s <= 0):
        raise ValueError(f"{name} must be > 0, got {sigma!r}")
    return s


def _check_clip(clip) -> np.ndarray:
    c = np.asarray(clip, dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(c >= 0):
        raise ValueError(f"clip must be finite and < 0, got {clip!r}")
    return c


# --------------------------------------------------------------------------
# quadrature for the maximum of the *other* n-1 logits
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _max_quadrature(n: int, nodes: int = 192):
    """Nodes/weights for E[h(M')] with M' the max of n-1 iid N(0,1).

    Density g(m) = (n-1) phi(m) Phi(m)^(n-2).  A coarse scan finds the
    support (where g > 1e-17 * max g); a dense trapezoid rule (spectrally
    accurate for a smooth, fast-decaying integrand) is laid over it and the
    weights are renormalized to sum to exactly 1.
    """
    def log_g(m):
        # Phi(m) = erfc(-m/sqrt2)/2 -- accurate in the lower tail.
        lphi = np.array([math.log(0.5 * math.erfc(-x / _SQRT2)) if x > -37 else -np.inf
                         for x in m])
        with np.errstate(invalid="ignore"):
            return math.log(n - 1) - 0.5 * m * m - _LOG_SQRT_2PI + (n - 2) * lphi

    coarse = np.linspace(-12.0, 12.0, 2401)
    lg = log_g(coarse)
    keep = np.nonzero(lg > lg.max() - 39.0)[0]
    a = coarse[max(keep[0] - 1, 0)]
    b = coarse[min(keep[-1] + 1, coarse.size - 1)]
    m = np.linspace(a, b, nodes)
    w = np.exp(log_g(m))
    w[0] *= 0.5
    w[-1] *= 0.5
    w /= w.sum()
    return m, w


@functools.lru_cache(maxsize=8)
def _gl(k: int):
    x, w = np.polynomial.legendre.leggauss(k)
    return x, w


def _density_u(u: np.ndarray, n: int) -> np.ndarray:
    """Density of D = Z - M' (Z ~ N(0,1) independent of M'), at points u.

    For u < 0 this is the density of a non-max standardized shifted logit.
    Integrates to (n-1)/n over u < 0.
    """
    m, w = _max_quadrature(n)
    # chunk to keep the (points x nodes) temporary bounded (~4M doubles)
    flat = u.reshape(-1)
    out = np.empty_like(flat)
    step = max(1, 4_000_000 // m.size)
    c0 = 1.0 / math.sqrt(2.0 * math.pi)
    for i in range(0, flat.size, step):
        z = flat[i:i + step, None] + m[None, :]
        out[i:i + step] = c0 * (np.exp(-0.5 * z * z) @ w)
    return out.reshape(u.shape)


def _u_min(n: int) -> float:
    m, _ = _max_quadrature(n)
    return -(m[-1] + 9.0)


def _panels(a: np.ndarray, b: np.ndarray, k: int):
    """Gauss-Legendre nodes/weights mapping [a,b] (arrays, same shape) -> (..., k)."""
    x, w = _gl(k)
    half = 0.5 * (b - a)
    mid = 0.5 * (b + a)
    return mid[..., None] + half[..., None] * x, half[..., None] * w


def _nodes_for(clip: float, sigma: float, bits: int, n: int, floor: str):
    """All quadrature nodes t, weights, and the dequantized value exp(Q(t)).

    Returns (t, weight, eq) 1-D arrays such that
    E = sum(weight * (exp(t) - eq)**2 * f_T(t)).
    """
    L = 1 << bits
    delta = -clip / (L - 1)
    t_min = sigma * _u_min(n)
    ts, ws, eqs = [], [], []
    # cells: code k covers [C + (k-1/2)delta, C + (k+1/2)delta] clipped to [C, 0]
    k_cell = 16 if bits <= 3 else (10 if bits <= 5 else 6)
    lo = clip + (np.arange(L) - 0.5) * delta
    hi = clip + (np.arange(L) + 0.5) * delta
    lo[0] = clip
    hi[-1] = 0.0
    t, w = _panels(lo, hi, k_cell)
    vals = np.exp(clip + np.arange(L) * delta)
    if floor == "zero":
        vals[0] = 0.0
    eq = np.broadcast_to(vals[:, None], t.shape)
    ts.append(t.ravel()); ws.append(w.ravel()); eqs.append(eq.ravel())
    # tail below the clip: every t < C is code 0
    if t_min < clip:
        P = 16
        s = (np.arange(P + 1) / P) ** 2           # graded: fine near C
        edges = clip - s * (clip - t_min)
        t, w = _panels(edges[1:], edges[:-1], 12)
        ts.append(t.ravel()); ws.append(w.ravel())
        eqs.append(np.full(t.size, 0.0 if floor == "zero" else math.exp(clip)))
    return np.concatenate(ts), np.concatenate(ws), np.concatenate(eqs)


def _exp_mse_scalar(clip: float, sigma: float, bits: int, n: int, floor: str) -> float:
    t, w, eq = _nodes_for(clip, sigma, bits, n, floor)
    dens = _density_u(t / sigma, n) / sigma
    err = np.exp(t) - eq
    return float(np.sum(w * err * err * dens))


def expected_exp_mse(clip, sigma, bits, *, n=1024, floor="exp"):
    r"""Expected squared error of the exponent after EXAQ quantization.

    Returns ``E[(exp(T) - exp(Q(T)))**2]`` for one entry ``T = Y_i - max(Y)`` of
    a row ``Y`` of ``n`` i.i.d. ``N(0, sigma**2)`` logits, where ``Q`` is the EXAQ
    quantizer of docs/semantics.md (section 2) with the *static* range ``[clip, 0]``:
    ``2**bits`` uniform levels ``clip + k*|clip|/(2**bits-1)``; inputs below
    ``clip`` get code 0.  ``floor="exp"`` (the reference) dequantizes code 0
    to ``exp(clip)``; ``floor="zero"`` makes code 0 contribute ``0``.

    The expectation is **per entry, averaged over all n entries** of the row
    (equivalently: for one fixed index ``i``), so the row maximum itself, whose
    error is exactly 0, is included with weight ``1/n``.  The average over the
    ``n-1`` non-max entries is this value times ``n/(n-1)``; the minimizer is the
    same.

    Derivation (numerical integration, not Monte Carlo).  Write ``Y = sigma*Z``.
    For a fixed index ``i``, let ``M' = max_{j != i} Z_j``; it is independent of
    ``Z_i`` and has density ``g(m) = (n-1) phi(m) Phi(m)**(n-2)``.  Then
    ``T = sigma * min(0, D)`` with ``D = Z_i - M'``, whose density is

    .. math:: f_D(u) = \int \phi(u + m)\, g(m)\, dm .

    ``D >= 0`` (probability ``1/n``) means ``i`` is the row maximum: ``T = 0``,
    error 0.  Hence

    .. math:: E = \int_{-\infty}^{0} \big(e^{t} - e^{Q(t)}\big)^2
                  \frac{1}{\sigma} f_D(t/\sigma)\, dt .

    The integrand is smooth on every quantization cell, so the integral is a sum
    of Gauss-Legendre rules, one per cell (code ``k`` covers
    ``[C+(k-1/2)Δ, C+(k+1/2)Δ] ∩ [C, 0]``; round-half-even only matters on a
    null set), plus a graded Gauss-Legendre rule on ``(-∞, C)`` truncated where
    ``f_D`` is below ``1e-16`` of its peak.  The inner integral over ``m`` uses a
    dense trapezoid rule on the support of ``g`` (computed with ``math.erfc``,
    cached per ``n``).  Relative accuracy is ~1e-10 (checked by node doubling
    in the tests) and the result is checked against Monte Carlo.

    Parameters
    ----------
    clip : float or array_like
        Clip value(s) ``C < 0``.  Broadcast against ``sigma``.
    sigma : float or array_like
        Standard deviation of the logits, ``> 0``.
    bits : int
        Bits per code, 2..8.
    n : int, keyword-only, default 1024
        Row length, ``>= 2``.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0 (see above).

    Returns
    -------
    float or numpy.ndarray
        A float for scalar inputs, else a float64 array of the broadcast shape.

    Raises
    ------
    TypeError
        If ``sigma`` is not a real number (or array of them), or ``bits`` is
        not an int.
    ValueError
        If ``sigma <= 0``, ``clip >= 0`` or not finite (or not a number),
        ``bits`` not in 2..8, ``n`` not an integer ``>= 2`` or ``floor``
        unknown.

    See Also
    --------
    optimal_clip : the clip minimizing this error.
    empirical_exp_mse : the same error measured on given rows.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> f"{clipping.expected_exp_mse(-4.3224, 2.0, 2):.4e}"      # near the optimum for sigma = 2
    '5.4918e-04'
    >>> f"{clipping.expected_exp_mse(clipping.gauss_clip(2.0, 2), 2.0, 2):.4e}"   # the published law
    '7.0008e-04'
    >>> clipping.expected_exp_mse([-3.0, -4.3224, -6.0], 2.0, 2).shape
    (3,)
    """
    bits = _check_bits(bits)
    n = _check_n(n)
    floor = _check_floor(floor)
    if np.any(np.asarray(sigma, dtype=np.float64) < 0):
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    s = _check_sigma(sigma)
    c = _check_clip(clip)
    cb, sb = np.broadcast_arrays(c, s)
    out = np.empty(cb.shape)
    for idx in np.ndindex(cb.shape):
        out[idx] = _exp_mse_scalar(float(cb[idx]), float(sb[idx]), bits, n, floor)
    if out.ndim == 0:
        return float(out)
    return out


def _minimize_scalar(f, a: float, b: float, tol: float):
    """Golden-section search for a minimum of a unimodal f on [a, b]."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c = b - g * (b - a)
    d = a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return 0.5 * (a + b)


def _optimal_clip_scalar(sigma: float, bits: int, n: int, floor: str, tol: float) -> float:
    f = lambda c: _exp_mse_scalar(c, sigma, bits, n, floor)
    # coarse scan on (t_min, 0): the optimum is inside the support of T
    span = sigma * (-_u_min(n)) + 1.0
    grid = -span * (np.arange(1, 41) / 40.0) ** 1.5
    vals = np.array([f(c) for c in grid])
    i = int(np.argmin(vals))
    hi = grid[i - 1] if i > 0 else grid[0] * 1e-3
    lo = grid[i + 1] if i + 1 < grid.size else grid[-1] * 1.5
    return _minimize_scalar(f, lo, hi, tol)


def optimal_clip(sigma, bits, *, n=1024, floor="exp", tol=1e-4):
    """Clip ``C`` minimizing :func:`expected_exp_mse` for the given ``sigma``.

    A coarse scan over ``(t_min, 0)`` brackets the minimum, then golden-section
    search narrows it to ``tol`` (the result is accurate to better than
    ``1e-3``).  Each entry of an array ``sigma`` is solved independently.  For
    ``sigma == 0`` the limit ``C = 0`` is returned (the optimum scales linearly
    with sigma for small sigma).  About 0.1 s per sigma.

    Parameters
    ----------
    sigma : float or array_like
        Standard deviation(s) of the Gaussian logits, ``>= 0``.
    bits : int
        Bits per code, 2..8.
    n : int, keyword-only, default 1024
        Row length, ``>= 2``.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0, as in :func:`expected_exp_mse`.
    tol : float, keyword-only, default 1e-4
        Width of the final bracket, ``> 0``.

    Returns
    -------
    float or numpy.ndarray
        The clip(s) (negative, or 0 for ``sigma == 0``): a float for a scalar
        ``sigma``, else a float64 array of its shape.

    Raises
    ------
    TypeError
        If ``sigma`` is not a real number (or array of them), or ``bits`` is
        not an int.
    ValueError
        For ``sigma < 0`` or not finite, ``bits`` not in 2..8, ``n`` not an
        integer ``>= 2``, an unknown ``floor`` or ``tol <= 0``.

    See Also
    --------
    gauss_clip : the paper's linear law, an approximation of this optimum.
    optimal_clip_table, table_clip : the optimum tabulated for ``n = 1024``.
    fit_linear_law : a linear law fitted to it.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> round(clipping.optimal_clip(2.0, 2), 2)
    -4.32
    >>> clipping.optimal_clip([0.0, 2.0], 2, floor="zero").round(2)
    array([ 0.  , -3.14])
    """
    bits = _check_bits(bits)
    n = _check_n(n)
    floor = _check_floor(floor)
    s = _check_sigma(sigma, allow_zero=True)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    out = np.empty(s.shape)
    for idx in np.ndindex(s.shape):
        sv = float(s[idx])
        out[idx] = 0.0 if sv == 0.0 else _optimal_clip_scalar(sv, bits, n, floor,
                                                              min(tol, 1e-3 * max(sv, 0.1)))
    if out.ndim == 0:
        return float(out)
    return out


# --------------------------------------------------------------------------
# published laws
# --------------------------------------------------------------------------

def gauss_clip(sigma, bits, *, extrapolate=False):
    """Published Gaussian linear law (docs/semantics.md, section 3.2): ``C = -a*sigma - c``.

    2-bit ``-1.66*sigma - 1.85``, 3-bit ``-1.75*sigma - 2.06``, 4-bit
    ``-1.83*sigma - 2.27``.  The paper gives no law for other widths; with
    ``extrapolate=True`` bits 5..8 use the least-squares line through the three
    published ``(bits, a)`` and ``(bits, c)`` points (an extrapolation, not a
    published value).  Vectorized over ``sigma``.  This is the raw clip: the
    softmax's ``clip="gauss"`` uses ``max(lo_obs, C)``.

    Parameters
    ----------
    sigma : float or array_like
        Standard deviation(s) of the shifted scores, ``>= 0``.
    bits : int
        Bits per code: 2, 3 or 4 (5..8 with ``extrapolate=True``).
    extrapolate : bool, keyword-only, default False
        Allow bits 5..8 through the extrapolated line.

    Returns
    -------
    float or numpy.ndarray
        ``C``: a float for a scalar ``sigma``, else a float64 array of its shape.

    Raises
    ------
    TypeError
        If ``sigma`` is not a real number (or array of them), or ``bits`` is
        not an int.
    ValueError
        For ``sigma < 0`` or not finite, ``bits`` outside 2..8, or bits 5..8
        without ``extrapolate=True``.

    See Also
    --------
    laplace_clip : the Laplace law.
    optimal_clip : the optimum the law approximates.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> clipping.gauss_clip(2.0, 2)                 # -1.66 * 2 - 1.85
    -5.17
    >>> clipping.gauss_clip([0.0, 1.0, 2.0], 3)
    array([-2.06, -3.81, -5.56])
    >>> round(clipping.gauss_clip(1.0, 5, extrapolate=True), 3)
    -4.397
    """
    bits = _check_bits(bits)
    s = _check_sigma(sigma, allow_zero=True)
    if bits in GAUSS_LAWS:
        a, c = GAUSS_LAWS[bits]
    elif extrapolate:
        bb = np.array(sorted(GAUSS_LAWS))
        pa = np.polyfit(bb, [GAUSS_LAWS[k][0] for k in bb], 1)
        pc = np.polyfit(bb, [GAUSS_LAWS[k][1] for k in bb], 1)
        a, c = float(np.polyval(pa, bits)), float(np.polyval(pc, bits))
    else:
        raise ValueError(f"bits={bits}: the Gaussian law is published for bits 2, 3, 4 only "
                         "(pass extrapolate=True to extend it)")
    r = -a * s - c
    return float(r) if r.ndim == 0 else r


def laplace_clip(b, bits):
    """Published Laplace linear law: ``C = -a*b - c`` with ``b = mean|t - mean(t)|``.

    2-bit ``-4.01*b - 1.77``, 4-bit ``-6.82*b - 0.15`` (the only published widths).
    Vectorized over ``b``.  This is the raw clip: the softmax's
    ``clip="laplace"`` uses ``max(lo_obs, C)``.

    Parameters
    ----------
    b : float or array_like
        Mean absolute deviation(s) of the shifted scores
        (``score_stats(x)["mean_abs_dev"]``), ``>= 0``.
    bits : {2, 4}
        Bits per code.

    Returns
    -------
    float or numpy.ndarray
        ``C``: a float for a scalar ``b``, else a float64 array of its shape.

    Raises
    ------
    TypeError
        If ``b`` is not a real number (or array of them), or ``bits`` is not
        an int.
    ValueError
        For ``b < 0`` or not finite, or ``bits`` other than 2 and 4.

    See Also
    --------
    gauss_clip : the Gaussian law.

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> round(clipping.laplace_clip(1.0, 2), 2)     # -4.01 * 1 - 1.77
    -5.78
    >>> clipping.laplace_clip([0.5, 1.0], 4)
    array([-3.56, -6.97])
    """
    bits = _check_bits(bits)
    bb = _check_sigma(b, name="b", allow_zero=True)
    if bits not in LAPLACE_LAWS:
        raise ValueError(f"bits={bits}: the Laplace law is published for bits 2 and 4 only")
    a, c = LAPLACE_LAWS[bits]
    r = -a * bb - c
    return float(r) if r.ndim == 0 else r


class LawFit(NamedTuple):
    """Result of :func:`fit_linear_law`: ``C = slope*sigma + intercept``.

    A :class:`typing.NamedTuple`.

    Attributes
    ----------
    bits, n, floor
        The arguments of the fit.
    sigmas : numpy.ndarray
        The sigma values fitted (float64, 1-D).
    clips : numpy.ndarray
        The solver optimum (:func:`optimal_clip`) at each sigma.
    slope, intercept : float
        The fitted ``a`` and ``c`` of ``C = a*sigma + c`` (both negative in
        practice).
    rmse : float
        RMS residual of the fit.
    published : tuple of float or None
        ``(slope, intercept)`` of the published Gaussian law for ``bits``, or
        None when there is none (bits 5..8).
    max_abs_diff : float or None
        Largest ``|published law - solver optimum|`` over the sigmas.
    mse_ratio : numpy.ndarray or None
        exp-MSE at the published clip over exp-MSE at the optimum, per sigma
        (1.0 = the law is optimal for this model).
    """

    bits: int
    n: int
    floor: str
    sigmas: np.ndarray
    clips: np.ndarray          #: solver optimum at each sigma
    slope: float               #: fitted ``a`` (negative)
    intercept: float           #: fitted ``c`` (negative)
    rmse: float                #: RMS residual of the fit
    published: Optional[tuple]  #: (slope, intercept) of the published law, or None
    max_abs_diff: Optional[float]  #: max |published law - solver optimum| over sigmas
    mse_ratio: Optional[np.ndarray]  #: exp-MSE at published clip / exp-MSE at optimum

    def summary(self) -> str:
        """A one-line report of the fit (and of the published law, if any).

        Returns
        -------
        str

        Examples
        --------
        >>> from exaq_cpu import clipping
        >>> print(clipping.fit_linear_law(2, [1.0, 2.0, 3.0, 4.0]).summary())  # doctest: +NORMALIZE_WHITESPACE
        2-bit, n=1024, floor=exp, sigma in [1, 4]: fitted C = -0.597*sigma -2.833 (rmse 0.230);
        published C = -1.66*sigma -1.85, max |diff| 3.469, exp-MSE ratio published/optimal 1.086..3.010
        """
        s = (f"{self.bits}-bit, n={self.n}, floor={self.floor}, sigma in "
             f"[{self.sigmas.min():g}, {self.sigmas.max():g}]: fitted C = "
             f"{self.slope:.3f}*sigma {self.intercept:+.3f} (rmse {self.rmse:.3f})")
        if self.published is not None:
            pa, pc = self.published
            s += (f"; published C = {pa:.2f}*sigma {pc:+.2f}, max |diff| "
                  f"{self.max_abs_diff:.3f}, exp-MSE ratio published/optimal "
                  f"{self.mse_ratio.min():.3f}..{self.mse_ratio.max():.3f}")
        return s


def fit_linear_law(bits, sigmas: Sequence[float], *, n=1024, floor="exp") -> LawFit:
    """Fit ``C = slope*sigma + intercept`` to :func:`optimal_clip` over ``sigmas``.

    Least squares over the given sigma values (at least 2, all ``> 0``).  When a
    published Gaussian law exists for ``bits`` the result also reports the
    largest absolute gap between it and the solver optimum, and the ratio of the
    exp-MSE at the published clip to the optimal exp-MSE at each sigma (1.0 =
    the law is optimal for this model).  ``LawFit.summary()`` gives a one-line
    report.  About 0.1 s per sigma.

    Parameters
    ----------
    bits : int
        Bits per code, 2..8.
    sigmas : sequence of float
        At least 2 values, all ``> 0`` (flattened).
    n : int, keyword-only, default 1024
        Row length, ``>= 2``.
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Value of code 0.

    Returns
    -------
    LawFit
        The fit, the solver's clips and the comparison with the published law.

    Raises
    ------
    TypeError
        If ``sigmas`` is not numeric or ``bits`` is not an int.
    ValueError
        For fewer than 2 sigmas, a sigma ``<= 0`` or not finite, ``bits``
        not in 2..8, ``n`` not an integer ``>= 2``, or an unknown ``floor``.

    See Also
    --------
    optimal_clip, gauss_clip

    Examples
    --------
    >>> from exaq_cpu import clipping
    >>> fit = clipping.fit_linear_law(2, [1.0, 2.0, 3.0, 4.0])
    >>> round(fit.slope, 2), round(fit.intercept, 2), fit.published
    (-0.6, -2.83, (-1.66, -1.85))
    >>> bool(fit.mse_ratio.min() >= 1.0)             # the law never beats the optimum
    True
    """
    bits = _check_bits(bits)
    n = _check_n(n)
    floor = _check_floor(floor)
    s = _check_sigma(np.asarray(sigmas, dtype=np.float64).ravel())
    if s.size < 2:
        raise ValueError("sigmas must hold at least 2 values")
    clips = optimal_clip(s, bits, n=n, floor=floor)
    slope, intercept = np.polyfit(s, clips, 1)
    rmse = float(np.sqrt(np.mean((slope * s + intercept - clips) ** 2)))
    pub = maxd = ratio = None
    if bits in GAUSS_LAWS:
        a, c = GAUSS_LAWS[bits]
        pub = (-a, -c)
        law = -a * s - c
        maxd = float(np.max(np.abs(law - clips)))
        ratio = (expected_exp_mse(law, s, bits, n=n, floor=floor)
                 / expected_exp_mse(clips, s, bits, n=n, floor=floor))
    return LawFit(bits, n, floor, s, clips, float(slope), float(intercept), rmse,
                  pub, maxd, ratio)
