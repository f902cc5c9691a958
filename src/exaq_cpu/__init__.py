"""exaq_cpu: EXAQ quantized softmax and LUT-GEMM on CPUs, in portable SIMD C.

The softmax of attention is replaced by a few lookups: scores are shifted by
their row maximum, clipped at an analytically chosen value, quantized to 2, 3
or 4-bit codes, and every code's exponent comes from a ``2**bits``-entry table
(EXAQ, see ``docs/semantics.md`` section 2 and ``docs/``).

Backends: ``backends()`` lists those this CPU can run, ``backend()`` names the
active one, ``set_backend(name)`` switches process-wide (ValueError if
unsupported), ``with use_backend(name):`` for the calling thread only, and every
kernel call takes ``backend=name`` for itself.  The
environment variable ``EXAQ_CPU_BACKEND=scalar|avx2|avx512|neon`` picks one at
import; a backend this CPU cannot run is reported with a ``RuntimeWarning`` and
the best supported one is kept, so forcing never crashes with an illegal
instruction.
"""
from __future__ import annotations

import os
import warnings

from . import _core
from ._backend import all_backends, backend, backends, set_backend, use_backend
from ._api import QuantizedRows, quantize, score_stats, softmax, softmax_into
from .packed import PackedSoftmax, lutsum, pack, packed_row_bytes, unpack

__all__ = [
    "softmax", "softmax_into", "quantize", "QuantizedRows", "score_stats",
    "PackedSoftmax", "pack", "unpack", "lutsum", "packed_row_bytes",
    "backends", "backend", "set_backend", "use_backend", "all_backends", "__version__",
]
__version__ = "0.1.0"


def _apply_environment_override() -> None:
    forced = os.environ.get("EXAQ_CPU_BACKEND", "").strip().lower()
    if not forced:
        return
    try:
        set_backend(forced)
    except ValueError as err:
        warnings.warn(f"EXAQ_CPU_BACKEND={forced!r} ignored: {err}; using {backend()!r}",
                      RuntimeWarning, stacklevel=3)


_apply_environment_override()
