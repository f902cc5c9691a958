"""threads= (the shared worker pool), the direct float path and softmax_into.

Every result must be bit for bit what one thread and the checking path give,
on every backend this CPU has."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exaq_cpu
from exaq_cpu import _core
from oracle import near_tie, reference

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scores(shape, seed, sigma=3.0, mask_rate=0.0, nan_rows=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * sigma).astype(np.float32)
    if mask_rate:
        x[rng.random(shape) < mask_rate] = -np.inf
    flat = x.reshape(-1, shape[-1]) if x.size else x
    for r in range(min(nan_rows, flat.shape[0] if x.size else 0)):
        flat[(r * 7) % flat.shape[0], 0] = np.nan
    return x


@given(rows=st.integers(1, 300), n=st.sampled_from([1, 7, 16, 33, 64, 130, 515, 1025]),
       bits=st.sampled_from([2, 3, 4, None]), clip=st.sampled_from(["gauss", "row", "laplace", None, -4.0]),
       threads=st.integers(2, 4), mask_rate=st.sampled_from([0.0, 0.2]), nan_rows=st.sampled_from([0, 2]),
       seed=st.integers(0, 99))
@HYP
def test_threads_give_the_bits_of_one_thread(rows, n, bits, clip, threads, mask_rate, nan_rows, seed):
    if (clip == "laplace" and bits == 3) or bits is None:  # the exact softmax takes no clip
        clip = "gauss"
    x = scores((rows, n), seed, mask_rate=mask_rate, nan_rows=nan_rows)
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            one = exaq_cpu.softmax(x, bits, clip=clip, threads=1)
            many = exaq_cpu.softmax(x, bits, clip=clip, threads=threads)
            assert one.tobytes() == many.tobytes(), name
            if bits is not None:
                p1 = exaq_cpu.softmax(x, bits, clip=clip, output="packed", threads=1)
                pn = exaq_cpu.softmax(x, bits, clip=clip, output="packed", threads=threads)
                assert p1.codes.tobytes() == pn.codes.tobytes()
                assert p1.table.tobytes() == pn.table.tobytes()
                assert np.array_equal(p1.lengths, pn.lengths)
                assert (p1.mask is None) == (pn.mask is None)
                assert p1.mask is None or np.array_equal(p1.mask, pn.mask)


def test_threads_run_on_the_pool_and_match_the_oracle(backend):
    x = scores((512, 1024), 3, mask_rate=0.05)
    got = exaq_cpu.softmax(x, 2, threads=2)
    assert _core.pool_workers() >= 1  # the pool took part (workers persist)
    workers = _core.pool_workers()
    for _ in range(5):
        exaq_cpu.softmax(x, 2, threads=2)
    assert _core.pool_workers() == workers  # no thread made per call
    ref = reference(x.astype(np.float64), 2, "gauss", "exp")
    clean = ref["live"] & ~np.any(near_tie(ref["v"]) & ref["use"], axis=1)
    np.testing.assert_allclose(got[clean], ref["probs"][clean], rtol=2e-5, atol=1e-37)


def test_default_threads_only_for_big_calls():
    cores = _core.cpu_count()
    assert _core.threads_for(None, 9 * 512) == 1  # a decode step stays on the caller
    assert _core.threads_for(None, 1 << 20) == min(cores, 16)
    assert _core.threads_for(3, 10) == 3
    assert _core.threads_for(10 ** 6, 10) == 64


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_thread_counts_are_refused(bad):
    x = scores((4, 8), 0)
    with pytest.raises(ValueError, match="threads"):
        exaq_cpu.softmax(x, 2, threads=bad)
    with pytest.raises(ValueError, match="threads"):
        exaq_cpu.softmax(x, 2, output="packed", threads=bad)
    with pytest.raises(ValueError, match="threads"):
        exaq_cpu.softmax_into(x, np.empty_like(x), 2, threads=bad)


@pytest.mark.parametrize("bad", [1.5, "2", True, [2]])
def test_thread_counts_of_the_wrong_type_are_refused(bad):
    x = scores((4, 8), 0)
    with pytest.raises(TypeError, match="threads"):
        exaq_cpu.softmax(x, 2, threads=bad)
    with pytest.raises(TypeError, match="threads"):
        exaq_cpu.softmax(x.astype(np.float64), None, threads=bad)


def test_concurrent_callers_share_the_pool_without_changing_results():
    xs = [scores((256, 600), s, mask_rate=0.05) for s in range(6)]
    expected = [exaq_cpu.softmax(x, 2, threads=1) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda x: exaq_cpu.softmax(x, 2, threads=2), xs))
            assert all(a.tobytes() == b.tobytes() for a, b in zip(got, expected))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_pool_works_in_a_forked_child():
    code = ("import numpy as np, os, exaq_cpu\n"
            "x = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)\n"
            "a = exaq_cpu.softmax(x, 2, threads=2)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    b = exaq_cpu.softmax(x, 2, threads=2)\n"
            "    os._exit(0 if b.tobytes() == a.tobytes() else 3)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "raise SystemExit(os.waitstatus_to_exitcode(status))\n")
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 0


# ---- the direct float path and softmax_into ----

@given(lead=st.sampled_from([(), (1,), (3,), (2, 3)]), n=st.sampled_from([1, 5, 16, 31, 128, 257]),
       bits=st.sampled_from([2, 3, 4, None]), clip=st.sampled_from(["gauss", "row", -3.0]),
       floor=st.sampled_from(["exp", "zero"]), mask_rate=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 99))
@HYP
def test_direct_path_and_softmax_into_equal_the_checking_path(lead, n, bits, clip, floor, mask_rate, seed):
    if bits is None:  # the exact softmax takes no clip
        clip = "gauss"
    x = scores(lead + (n,), seed, mask_rate=mask_rate)
    for name in exaq_cpu.backends():
        with exaq_cpu.use_backend(name):
            checked = exaq_cpu.softmax(x.astype(np.float64), bits, clip=clip, floor=floor)  # converts: checking path
            direct = _core.softmax_common(x, bits, -1, clip, floor, None, "float", None)
            assert direct is not None and direct.shape == x.shape and direct.dtype == np.float32
            assert direct.tobytes() == checked.tobytes()
            out = np.full_like(x, 7.0)
            assert exaq_cpu.softmax_into(x, out, bits, clip=clip, floor=floor) is out
            assert out.tobytes() == checked.tobytes()
            inplace = x.copy()
            exaq_cpu.softmax_into(inplace, inplace, bits, clip=clip, floor=floor)
            assert inplace.tobytes() == checked.tobytes()


def test_direct_path_declines_what_it_cannot_read():
    x = scores((4, 40), 0)
    out = np.empty_like(x)
    for args in [(x.T, 2, -1, None), (x.astype(np.float64), 2, -1, None), (x, 2, 0, None), (x.tolist(), 2, -1, None),
                 (x[:, ::2], 2, -1, None), (x.astype(">f4"), 2, -1, None), (x, True, -1, None), (x, 5, -1, None),
                 (x, 2, -1, out[:, :20]), (x, 2, -1, out.astype(np.float64)), (x, 2, -1, x[::-1]),
                 (x, 2, -1, np.empty((4, 40, 1), np.float32))]:
        assert _core.softmax_common(args[0], args[1], args[2], "gauss", "exp", args[3], "float", None) is None
    overlapping = np.empty(4 * 40 + 1, np.float32)
    a, b = overlapping[:-1].reshape(4, 40), overlapping[1:].reshape(4, 40)
    a[...] = x
    assert _core.softmax_common(a, 2, -1, "gauss", "exp", b, "float", None) is None
    expected = exaq_cpu.softmax(x, 2)
    exaq_cpu.softmax(a, 2, out=b)  # the checking path copies: still right
    assert b.tobytes() == expected.tobytes()
    readonly = np.empty_like(x)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        exaq_cpu.softmax(x, 2, out=readonly)


def test_softmax_into_refuses_what_it_cannot_take():
    x = scores((3, 32), 1)
    out = np.empty_like(x)
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        exaq_cpu.softmax_into(x.tolist(), out)
    with pytest.raises(ValueError, match="x must be a C-contiguous"):
        exaq_cpu.softmax_into(x.astype(np.float64), out)
    with pytest.raises(ValueError, match="x must be a C-contiguous"):
        exaq_cpu.softmax_into(x[:, ::2], out[:, :16])
    with pytest.raises(ValueError, match="out must be"):
        exaq_cpu.softmax_into(x, out[:, :16])
    with pytest.raises(ValueError, match="out must be"):
        exaq_cpu.softmax_into(x, out.astype(np.float64))
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be"):
        exaq_cpu.softmax_into(x, ro)
    with pytest.raises(TypeError, match="out must be"):
        exaq_cpu.softmax_into(x, None)
    with pytest.raises(ValueError, match="bits"):
        exaq_cpu.softmax_into(x, out, 5)
    with pytest.raises(ValueError, match="clip"):
        exaq_cpu.softmax_into(x, out, 2, clip="table")
    with pytest.raises(ValueError, match="clip"):
        exaq_cpu.softmax_into(x, out, 2, clip=float("-inf"))
    with pytest.raises(TypeError, match="clip"):
        exaq_cpu.softmax_into(x, out, 2, clip=[1])
    with pytest.raises(ValueError, match="floor"):
        exaq_cpu.softmax_into(x, out, 2, floor="none")
    assert exaq_cpu.softmax_into(x, out, 2, clip=-5) is out  # an int static clip is a float clip
    assert out.tobytes() == exaq_cpu.softmax(x, 2, clip=-5.0).tobytes()
    empty = np.empty((0, 8), np.float32)
    assert exaq_cpu.softmax_into(empty, np.empty_like(empty)).shape == (0, 8)


def test_fast_entries_hand_unusual_argument_types_to_the_checking_path():
    """softmax / softmax_into read plain ints, law names and floats in C; numpy
    scalars, bools and bad values take the Python path, with the same result
    or its error."""
    x = scores((3, 40), 1)
    want = exaq_cpu.softmax(x, 2, clip=-3.0)
    out = np.empty_like(x)
    assert exaq_cpu.softmax_into(x, out, np.int64(2), clip=np.float64(-3.0)).tobytes() == want.tobytes()
    assert exaq_cpu.softmax(x, np.int32(2), clip=np.float32(-3.0)).tobytes() == want.tobytes()
    assert _core.softmax_common(x, np.int64(2), -1, -3.0, "exp", None, "float", None) is None
    assert _core.softmax_into(x, out, True, "gauss", "exp", 1) is None
    with pytest.raises(ValueError, match="bits"):
        exaq_cpu.softmax_into(x, out, 5)
    with pytest.raises(TypeError, match="bits"):
        exaq_cpu.softmax_into(x, out, True)
    with pytest.raises(ValueError, match="clip"):
        exaq_cpu.softmax_into(x, out, 2, clip=float("nan"))
    with pytest.raises(ValueError, match="floor"):
        exaq_cpu.softmax_into(x, out, 2, floor="ceil")
    with pytest.raises(ValueError, match="threads"):
        exaq_cpu.softmax_into(x, out, 2, threads=0)
    with pytest.raises(TypeError, match="out"):
        exaq_cpu.softmax_into(x, None, 2)
    with pytest.raises(ValueError, match="laplace"):
        exaq_cpu.softmax_into(x, out, 3, clip="laplace")
