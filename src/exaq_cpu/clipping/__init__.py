"""Analytical optimal clipping for EXAQ: error model, solver, published laws, calibration.

EXAQ quantizes the shifted attention scores ``t = x - max(x) <= 0`` on the
range ``[lo, 0]`` with ``lo = max(lo_obs, C)``; the clip ``C`` trades range
(rounding error) against clipping error.  This module makes that choice
explicit and testable (pure NumPy; the compiled core is only used, lazily, by
:class:`Calibrator` to compute score statistics):

- :func:`expected_exp_mse` -- ``E[(exp(T) - exp(Q(T)))**2]`` for rows of ``n``
  i.i.d. Gaussian logits, by numerical integration (derivation in its docstring
  and in ``docs/clipping.md``);
- :func:`optimal_clip` -- its minimizer;
- :func:`gauss_clip`, :func:`laplace_clip` -- the paper's linear laws;
- :func:`fit_linear_law` -- fit ``C = a*sigma + c`` to the solver and compare;
- :func:`optimal_clip_table`, :func:`table_clip` -- shipped sigma -> clip tables
  (exp-MSE and whole-row softmax objectives, ``floor="exp"``/``"zero"``);
- :func:`clip_from_stats` -- the ``clip=`` modes (``"table"``, ``"softmax_kl"``,
  ``"accurate"``, ...) evaluated from :func:`exaq_cpu.score_stats` output;
- :func:`expected_softmax_error`, :func:`optimal_softmax_clip` -- whole-row
  objectives (softmax MSE, KL, L1);
- :class:`Calibrator` -- static per-layer / per-head clips (docs/semantics.md, section 3.4);
- :func:`robustness_study` -- analytic vs best clip on non-Gaussian rows.

Command line: ``python -m exaq_cpu.clipping {sweep,fit,table,robustness,regen-tables}``.
"""

from ._calibrator import FALLBACK_CLIP, Calibrator, numpy_score_stats
from ._model import (
    FLOORS,
    KERNEL_BITS,
    GAUSS_LAWS,
    LAPLACE_LAWS,
    LawFit,
    expected_exp_mse,
    fit_linear_law,
    gauss_clip,
    laplace_clip,
    optimal_clip,
)
from ._robust import DISTRIBUTIONS, empirical_exp_mse, robustness_study, sample_rows
from ._row import ROW_OBJECTIVES, expected_softmax_error, optimal_softmax_clip
from ._tablemodes import (
    BEST_MODE,
    CLIP_MODES,
    TABLE_OBJECTIVES,
    clip_from_stats,
    clip_law,
    optimal_clip_table,
    table_clip,
)

#: ``clip=`` modes of :func:`exaq_cpu.softmax` that are resolved here through
#: :func:`clip_from_stats` (the published laws and "naive" are handled in C).
STATS_CLIP_MODES = ("table",) + TABLE_OBJECTIVES + ("accurate",)

__all__ = [
    "BEST_MODE",
    "CLIP_MODES",
    "DISTRIBUTIONS",
    "FALLBACK_CLIP",
    "FLOORS",
    "KERNEL_BITS",
    "GAUSS_LAWS",
    "LAPLACE_LAWS",
    "ROW_OBJECTIVES",
    "STATS_CLIP_MODES",
    "TABLE_OBJECTIVES",
    "Calibrator",
    "LawFit",
    "clip_from_stats",
    "clip_law",
    "empirical_exp_mse",
    "expected_exp_mse",
    "expected_softmax_error",
    "fit_linear_law",
    "gauss_clip",
    "laplace_clip",
    "numpy_score_stats",
    "optimal_clip",
    "optimal_clip_table",
    "optimal_softmax_clip",
    "robustness_study",
    "sample_rows",
    "table_clip",
]
