"""Backend choice: process-wide (``set_backend``), per thread (``use_backend``)
and per call (``backend=`` on every kernel call).

The C dispatch keeps one process-wide backend and, per thread, an optional
choice that overrides it; every kernel call looks the backend up at call time
(``exaq_active_backend``) and hands the pointer to the worker threads of that
call, so a thread's choice covers the pool threads that compute for it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from . import _core


def all_backends() -> list[str]:
    """Every backend name this build knows, whether or not this CPU can run it."""
    return _core.backend_names()


def backends() -> list[str]:
    """The backends this CPU and build can run, slowest (``"scalar"``) first."""
    return _core.supported_backends()


def backend() -> str:
    """Name of the backend a kernel call from this thread uses now."""
    return _core.active_backend()


def check_backend(name, argument: str = "backend") -> str:
    """``name`` if it is a backend this CPU runs; TypeError/ValueError naming ``argument``."""
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a backend name (str), got {type(name).__name__}")
    if name not in all_backends():
        raise ValueError(f"unknown {argument} {name!r}; known: {all_backends()}")
    if name not in backends():
        raise ValueError(f"{argument} {name!r} is not available on this CPU; available: {backends()}")
    return name


def set_backend(name: str) -> None:
    """Make ``name`` the process-wide backend for every later call.

    Threads inside ``use_backend`` keep their own choice.  Raises TypeError
    for a non-string and ValueError if ``name`` is unknown or this CPU cannot
    run it.  Prefer ``use_backend`` or ``backend=`` while other threads compute.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {type(name).__name__}")
    if name not in all_backends():
        raise ValueError(f"unknown backend {name!r}; known: {all_backends()}")
    _core.set_active_backend(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run the calling thread's kernel calls on backend ``name`` inside the block.

    Thread-local: other threads keep theirs; nests, and restores the previous
    choice on exit (also on an exception)::

        with exaq_cpu.use_backend("avx2"):
            p = exaq_cpu.softmax(x, bits=2)

    Raises TypeError/ValueError (before the block runs) for a name that is not
    a backend this CPU runs.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> x = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32)
    >>> with exaq_cpu.use_backend("scalar"):
    ...     exaq_cpu.backend()
    'scalar'
    >>> bool(np.array_equal(exaq_cpu.softmax(x, 2, backend="scalar"), exaq_cpu.softmax(x, 2)))
    True
    """
    check_backend(name)
    previous = _core.set_thread_backend(name)
    try:
        yield name
    finally:
        _core.set_thread_backend(previous)


@contextlib.contextmanager
def call_backend(name: Optional[str]) -> Iterator[None]:
    """The ``backend=`` argument of a kernel call: ``use_backend`` unless None."""
    if name is None:
        yield
        return
    with use_backend(check_backend(name)):
        yield
