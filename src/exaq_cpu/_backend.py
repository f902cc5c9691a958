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
    """Every backend name this build knows, whether or not this CPU can run it.

    Returns
    -------
    list of str
        The names in the build's fixed order (``"scalar"`` first), e.g.
        ``["scalar", "avx2", "avx512", "neon"]``: a superset of
        :func:`backends`.  A new list on every call.

    See Also
    --------
    backends : the subset this CPU can run.
    set_backend, use_backend : switch to one of them.

    Examples
    --------
    >>> import exaq_cpu
    >>> names = exaq_cpu.all_backends()
    >>> names[0], "avx512" in names
    ('scalar', True)
    >>> set(exaq_cpu.backends()) <= set(names)
    True
    """
    return _core.backend_names()


def backends() -> list[str]:
    """The backends this CPU and build can run, slowest (``"scalar"``) first.

    The portable ``"scalar"`` backend is always there; the SIMD ones
    (``"avx2"``, ``"avx512"``, ``"neon"``) are listed when this build holds
    them and the CPU has the instructions they need.  Every backend gives the
    same results (``docs/semantics.md`` section 9), only at different speeds.

    Returns
    -------
    list of str
        Names accepted by :func:`set_backend`, :func:`use_backend` and the
        ``backend=`` argument of the kernel calls; a new list on every call.

    See Also
    --------
    all_backends : every name this build knows.
    backend : the one in use now.

    Examples
    --------
    >>> import exaq_cpu
    >>> available = exaq_cpu.backends()
    >>> available[0]
    'scalar'
    >>> exaq_cpu.backend() in available
    True
    """
    return _core.supported_backends()


def backend() -> str:
    """Name of the backend a kernel call from this thread uses now.

    That is the thread's own choice while inside :func:`use_backend`, else
    the process-wide one (:func:`set_backend`, the ``EXAQ_CPU_BACKEND``
    environment variable at import, or by default the fastest of
    :func:`backends`).  The ``backend=`` argument of a single call is not
    reflected here outside that call.

    Returns
    -------
    str
        One of :func:`backends`.

    See Also
    --------
    backends, set_backend, use_backend

    Examples
    --------
    >>> import exaq_cpu
    >>> exaq_cpu.backend() in exaq_cpu.backends()
    True
    >>> with exaq_cpu.use_backend("scalar"):
    ...     print(exaq_cpu.backend())
    scalar
    """
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

    Threads inside :func:`use_backend` keep their own choice, and a call's
    ``backend=`` argument still overrides it for that call.  The setting
    applies to every thread, so prefer ``use_backend`` or ``backend=`` while
    other threads compute.

    Parameters
    ----------
    name : str
        A backend this CPU runs, one of :func:`backends`.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``name`` is not a ``str``.
    ValueError
        If ``name`` is not one of :func:`all_backends`, or is one this CPU
        cannot run (the previous choice is then kept).

    See Also
    --------
    use_backend : the same for the calling thread only, inside a block.
    backend : the name in use now.

    Examples
    --------
    >>> import exaq_cpu
    >>> previous = exaq_cpu.backend()
    >>> exaq_cpu.set_backend("scalar")
    >>> exaq_cpu.backend()
    'scalar'
    >>> exaq_cpu.set_backend(previous)       # restore the earlier choice
    >>> exaq_cpu.set_backend("sse9")
    Traceback (most recent call last):
        ...
    ValueError: unknown backend 'sse9'; known: [...]
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

    Parameters
    ----------
    name : str
        A backend this CPU runs, one of :func:`backends`.

    Yields
    ------
    str
        ``name``, so ``with use_backend("scalar") as b:`` binds it.

    Raises
    ------
    TypeError
        If ``name`` is not a ``str`` (before the block runs).
    ValueError
        If ``name`` is unknown or this CPU cannot run it (before the block
        runs).

    See Also
    --------
    set_backend : the process-wide choice.
    backend : the name in use now.

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
