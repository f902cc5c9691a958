"""Set the thread count of NumPy's BLAS after NumPy has been imported.

``OPENBLAS_NUM_THREADS`` only works if set before NumPy starts, which a library cannot promise.
``threadpoolctl`` is used when installed; otherwise OpenBLAS's own ``*_set_num_threads`` entry point
is called through ctypes on the OpenBLAS library NumPy has loaded (Linux: found in
``/proc/self/maps``; the names cover NumPy's bundled ``scipy_openblas`` and a system OpenBLAS).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator

__all__ = ["blas_threads", "get_blas_threads", "set_blas_threads"]

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)


def _openblas_functions():
    """(setter, getter) from the OpenBLAS NumPy loaded, or (None, None)."""
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded)

    try:
        with open("/proc/self/maps") as maps:
            paths = {m.group(1) for line in maps if (m := re.search(r"(/\S*openblas\S*\.so[.\d]*)$", line.strip()))}
    except OSError:
        return None, None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None, None


def get_blas_threads() -> int | None:
    """Threads NumPy's BLAS uses now, or ``None`` if that cannot be found out."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        _, getter = _openblas_functions()
        return int(getter()) if getter is not None else None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return counts[0] if counts else None


def set_blas_threads(count: int) -> bool:
    """Make NumPy's BLAS use ``count`` threads; ``False`` if no supported BLAS was found."""
    if count < 1:
        raise ValueError(f"thread count must be >= 1, got {count}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        setter, _ = _openblas_functions()
        if setter is None:
            return False
        setter(count)
        return True
    threadpool_limits(limits=count, user_api="blas")
    return True


@contextlib.contextmanager
def blas_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` BLAS threads (``None``: leave unchanged), then restore."""
    previous = get_blas_threads() if count is not None else None
    if count is not None:
        set_blas_threads(count)
    try:
        yield
    finally:
        if previous is not None:
            set_blas_threads(previous)
