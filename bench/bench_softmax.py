"""Softmax speed, single thread, float32 scores of shape (256, 2048).

    python -m pytest bench/bench_softmax.py --benchmark-only --benchmark-group-by=group

Compares, in one run, EXAQ (bits 2/3/4), our exact float softmax, NumPy,
SciPy and (if installed) PyTorch.  Ratios: see bench/report.py.
"""
import numpy as np
import pytest

import exaq_cpu

try:
    import scipy.special
except ImportError:  # pragma: no cover
    scipy = None
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

SHAPE = (256, 2048)


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    return (rng.standard_normal(SHAPE) * 3).astype(np.float32)


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.benchmark(group="softmax-256x2048")
@pytest.mark.parametrize("bits", [2, 3, 4, None])
@pytest.mark.parametrize("backend", exaq_cpu.backends())
def test_exaq(benchmark, scores, bits, backend):
    exaq_cpu.set_backend(backend)
    out = np.empty_like(scores)
    try:
        benchmark(exaq_cpu.softmax, scores, bits, out=out)
    finally:
        exaq_cpu.set_backend(exaq_cpu.backends()[-1])


@pytest.mark.benchmark(group="softmax-256x2048")
def test_exaq_static_clip(benchmark, scores):
    out = np.empty_like(scores)
    benchmark(exaq_cpu.softmax, scores, 2, clip=-6.0, out=out)


@pytest.mark.benchmark(group="softmax-256x2048")
def test_numpy(benchmark, scores):
    benchmark(numpy_softmax, scores)


@pytest.mark.benchmark(group="softmax-256x2048")
@pytest.mark.skipif(scipy is None, reason="scipy not installed")
def test_scipy(benchmark, scores):
    benchmark(scipy.special.softmax, scores, axis=-1)


@pytest.mark.benchmark(group="softmax-256x2048")
@pytest.mark.skipif(torch is None, reason="torch not installed (pip install torch==2.13.0)")
def test_torch(benchmark, scores):
    t = torch.from_numpy(scores)
    benchmark(torch.softmax, t, -1)
