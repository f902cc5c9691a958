"""Backend choice per call (``backend=``), per thread (``use_backend``) and
process-wide (``set_backend``): which backend a call runs on, and that the
choice of one thread never leaks into another's."""
import threading

import numpy as np
import pytest

import exaq_cpu
from exaq_cpu import _core
from exaq_cpu import lutgemm as L

BACKENDS = exaq_cpu.backends()
DEFAULT = exaq_cpu.backend()
RNG = np.random.default_rng(7)
X = (RNG.standard_normal((16, 300)) * 3).astype(np.float32)


def _spy(monkeypatch, name):
    """Replace _core.<name> by a wrapper recording the backend in force when it runs."""
    seen = []
    original = getattr(_core, name)

    def wrapper(*args, **kwargs):
        seen.append(exaq_cpu.backend())
        return original(*args, **kwargs)

    monkeypatch.setattr(_core, name, wrapper)
    return seen


CALLS = {  # public call -> the _core entry it reaches
    "softmax": (lambda b: exaq_cpu.softmax(X, 2, backend=b), "softmax_common"),
    "softmax exact": (lambda b: exaq_cpu.softmax(X, None, backend=b), "softmax_common"),
    "softmax packed": (lambda b: exaq_cpu.softmax(X, 3, output="packed", backend=b), "softmax_common"),
    "softmax_into": (lambda b: exaq_cpu.softmax_into(X, np.empty_like(X), 2, backend=b), "softmax_into"),
    "quantize": (lambda b: exaq_cpu.quantize(X, 2, backend=b), "quantize_codes"),
    "score_stats": (lambda b: exaq_cpu.score_stats(X, backend=b), "score_stats"),
    "pack": (lambda b: exaq_cpu.pack(np.zeros((2, 9), np.uint8), 3, backend=b), "pack_codes"),
    "unpack": (lambda b: exaq_cpu.unpack(np.zeros((2, 9), np.uint8), 3, backend=b), "unpack_codes"),
    "lutsum": (lambda b: exaq_cpu.lutsum(np.zeros((2, 9), np.uint8), 2, np.ones(4), backend=b), "lutsum"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("name", BACKENDS)
def test_backend_argument_is_in_force_during_the_call(monkeypatch, call, name):
    run, entry = CALLS[call]
    seen = _spy(monkeypatch, entry)
    run(name)
    assert seen == [name]
    assert exaq_cpu.backend() == DEFAULT  # restored after the call


@pytest.mark.parametrize("call", sorted(CALLS))
def test_backend_argument_rejects_bad_names(call):
    run, _ = CALLS[call]
    with pytest.raises(TypeError, match="backend"):
        run(2)
    with pytest.raises(ValueError, match="unknown backend 'sse9'"):
        run("sse9")
    for name in set(exaq_cpu.all_backends()) - set(BACKENDS):
        with pytest.raises(ValueError, match="not available on this CPU"):
            run(name)
    assert exaq_cpu.backend() == DEFAULT


def _differs_by_backend():
    """lut_gemm with float tables uses the backend's preferred table design
    (mu8 on scalar, mu4 on SIMD backends), which round differently: its
    result shows which backend computed it, pool threads included."""
    W = RNG.standard_normal((64, 512)).astype(np.float32)
    Wq = L.quantize_weights(W, bits=3, group_size=128, method="greedy")
    x = RNG.standard_normal((3, 512)).astype(np.float32)
    return Wq, x


def _preferred_tables():
    designs = {}
    for name in BACKENDS:
        with exaq_cpu.use_backend(name):
            designs[name] = L.preferred_table()
    return designs


@pytest.mark.skipif(len(set(_preferred_tables().values())) < 2,
                    reason="needs two backends with different table designs (scalar + a SIMD one)")
def test_the_kernels_run_on_the_chosen_backend_in_every_pool_thread():
    Wq, x = _differs_by_backend()
    ref = {}
    for name in BACKENDS:
        with exaq_cpu.use_backend(name):
            ref[name] = L.lut_gemm(x, Wq, method="lut", precision="exact", threads=1)
    assert not np.array_equal(ref["scalar"], ref[BACKENDS[-1]])  # the designs do differ
    for name in BACKENDS:
        for threads in (1, 2):
            got = L.lut_gemm(x, Wq, method="lut", precision="exact", threads=threads, backend=name)
            assert np.array_equal(got, ref[name]), (name, threads)


def test_use_backend_is_thread_local_nests_and_restores():
    other_saw = []
    inside = threading.Event()
    done = threading.Event()

    def other_thread():
        inside.wait(5)
        other_saw.append(exaq_cpu.backend())
        done.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with exaq_cpu.use_backend("scalar") as chosen:
        assert chosen == "scalar" and exaq_cpu.backend() == "scalar"
        inside.set()
        done.wait(5)
        with exaq_cpu.use_backend(BACKENDS[-1]):
            assert exaq_cpu.backend() == BACKENDS[-1]
        assert exaq_cpu.backend() == "scalar"
        with pytest.raises(RuntimeError):
            with exaq_cpu.use_backend(BACKENDS[-1]):
                raise RuntimeError("inside")
        assert exaq_cpu.backend() == "scalar"
    t.join(5)
    assert other_saw == [DEFAULT]  # the other thread kept the process-wide backend
    assert exaq_cpu.backend() == DEFAULT


def test_use_backend_checks_the_name_before_the_block():
    ran = []
    with pytest.raises(ValueError, match="unknown backend"):
        with exaq_cpu.use_backend("bogus"):
            ran.append(1)
    with pytest.raises(TypeError):
        with exaq_cpu.use_backend(None):
            ran.append(1)
    assert not ran and exaq_cpu.backend() == DEFAULT


def test_thread_choice_wins_over_process_wide_switch():
    with exaq_cpu.use_backend("scalar"):
        exaq_cpu.set_backend(BACKENDS[-1])
        try:
            assert exaq_cpu.backend() == "scalar"
        finally:
            exaq_cpu.set_backend(DEFAULT)
    assert exaq_cpu.backend() == DEFAULT


def test_concurrent_threads_each_get_their_backend():
    Wq, x = _differs_by_backend()
    expected = {name: L.lut_gemm(x, Wq, method="lut", precision="exact", backend=name) for name in BACKENDS}
    errors = []

    def worker(name):
        try:
            for _ in range(20):
                with exaq_cpu.use_backend(name):
                    y = L.lut_gemm(x, Wq, method="lut", precision="exact", threads=2)
                if not np.array_equal(y, expected[name]):
                    errors.append(name)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=worker, args=(name,)) for name in BACKENDS * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
