"""Softmax speed with pytest-benchmark: every shape of bench/report.py, every contender.

    pip install ".[bench]" torch==2.13.0
    python -m pytest bench/bench_softmax.py --benchmark-only --benchmark-group-by=group
    python -m pytest bench/ --benchmark-only -k "256x2048"           # one shape

One group per shape; contenders: NumPy, ``scipy.special.softmax``,
``torch.softmax`` (one thread), and ours on every SIMD backend this CPU has,
forced: exact, EXAQ bits 2/3/4, bits 2 with a static clip, and the packed
output; single thread (``threads=1``).  pytest-benchmark times each contender
on its own; ``python bench/report.py`` times them interleaved in one process
and prints the ratios.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import exaq_cpu  # noqa: E402
from report import SHAPES, STATIC_CLIP, make_scores, numpy_softmax, parse_shape  # noqa: E402

try:
    import scipy.special
except ImportError:  # pragma: no cover
    scipy = None
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

SIMD_BACKENDS = [b for b in exaq_cpu.backends() if b != "scalar"] or ["scalar"]
OURS = {
    "exact": lambda x, out: exaq_cpu.softmax(x, None, out=out, threads=1),
    "bits=2": lambda x, out: exaq_cpu.softmax(x, 2, out=out, threads=1),
    "bits=3": lambda x, out: exaq_cpu.softmax(x, 3, out=out, threads=1),
    "bits=4": lambda x, out: exaq_cpu.softmax(x, 4, out=out, threads=1),
    "bits=2-static": lambda x, out: exaq_cpu.softmax(x, 2, clip=STATIC_CLIP, out=out, threads=1),
    "packed": lambda x, out: exaq_cpu.softmax(x, 2, output="packed", threads=1),
}
_SCORES = {}


def scores_of(shape):
    if shape not in _SCORES:
        _SCORES.clear()  # one shape's scores at a time: the causal one is 32 MB
        _SCORES[shape] = make_scores(*parse_shape(shape))
    return _SCORES[shape]


@pytest.fixture
def forced_backend():
    previous = exaq_cpu.backend()
    yield exaq_cpu.set_backend
    exaq_cpu.set_backend(previous)


@pytest.mark.parametrize("variant", list(OURS))
@pytest.mark.parametrize("backend", SIMD_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_exaq(benchmark, forced_backend, shape, backend, variant):
    benchmark.group = f"softmax {shape}"
    x = scores_of(shape)
    forced_backend(backend)
    benchmark(OURS[variant], x, np.empty_like(x))


@pytest.mark.parametrize("shape", SHAPES)
def test_numpy(benchmark, shape):
    benchmark.group = f"softmax {shape}"
    benchmark(numpy_softmax, scores_of(shape))


@pytest.mark.skipif(scipy is None, reason="scipy not installed (pip install '.[bench]')")
@pytest.mark.parametrize("shape", SHAPES)
def test_scipy(benchmark, shape):
    benchmark.group = f"softmax {shape}"
    benchmark(scipy.special.softmax, scores_of(shape), axis=-1)


@pytest.mark.skipif(torch is None, reason="torch not installed (pip install torch==2.13.0)")
@pytest.mark.parametrize("shape", SHAPES)
def test_torch(benchmark, shape):
    benchmark.group = f"softmax {shape}"
    benchmark(torch.softmax, torch.from_numpy(scores_of(shape)), -1)
