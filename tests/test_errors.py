"""The error contract of docs/errors.md, entry point by entry point.

TypeError for an argument of the wrong type, ValueError for a wrong value (or a corrupt file),
each message naming the argument; never OverflowError, KeyError, AttributeError, ZeroDivisionError.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import exaq_cpu
from exaq_cpu import clipping, lutgemm
from exaq_cpu.packed import PackedSoftmax

X = np.zeros((2, 8), np.float32)
CODES = np.zeros((2, 8), np.uint8)


def _w():
    return lutgemm.quantize_weights(np.ones((4, 16), np.float32), bits=2, group_size=8)


# (call, expected exception, word the message must contain)
CASES = {
    # bits: the same mistake gives the same error in every entry point
    "softmax bits str": (lambda: exaq_cpu.softmax(X, "2"), TypeError, "bits"),
    "softmax bits float": (lambda: exaq_cpu.softmax(X, 2.0), TypeError, "bits"),
    "packed bits str": (lambda: exaq_cpu.softmax(X, "2", output="packed"), TypeError, "bits"),
    "softmax_into bits str": (lambda: exaq_cpu.softmax_into(X, X.copy(), "2"), TypeError, "bits"),
    "quantize bits str": (lambda: exaq_cpu.quantize(X, "2"), TypeError, "bits"),
    "pack bits str": (lambda: exaq_cpu.pack(CODES, "2"), TypeError, "bits"),
    "unpack bits float": (lambda: exaq_cpu.unpack(np.zeros((2, 2), np.uint8), 2.0), TypeError, "bits"),
    "lutsum bits str": (lambda: exaq_cpu.lutsum(np.zeros(2, np.uint8), "2", np.ones(4)), TypeError, "bits"),
    "bcq quantize bits str": (lambda: lutgemm.quantize_weights(np.ones((4, 16), np.float32), bits="2"), TypeError, "bits"),
    "softmax bits 5": (lambda: exaq_cpu.softmax(X, 5), ValueError, "bits"),
    "pack bits 5": (lambda: exaq_cpu.pack(CODES, 5), ValueError, "bits"),
    "bcq quantize bits 7": (lambda: lutgemm.quantize_weights(np.ones((4, 16), np.float32), bits=7), ValueError, "bits"),
    # group size, threads
    "group_size str": (lambda: lutgemm.quantize_weights(np.ones((4, 16), np.float32), 2, "8"), TypeError, "group_size"),
    "group_size 3": (lambda: lutgemm.quantize_weights(np.ones((4, 16), np.float32), 2, 3), ValueError, "group_size"),
    "lut_gemm threads str": (lambda: lutgemm.lut_gemm(np.ones(16, np.float32), _w(), threads="a"), TypeError, "threads"),
    "lut_gemm threads 0": (lambda: lutgemm.lut_gemm(np.ones(16, np.float32), _w(), threads=0), ValueError, "threads"),
    "lut_gemm W str": (lambda: lutgemm.lut_gemm(np.ones(16, np.float32), "W"), TypeError, "Wq"),
    "softmax threads str": (lambda: exaq_cpu.softmax(X, 2, threads="a"), TypeError, "threads"),
    # axis
    "softmax axis str": (lambda: exaq_cpu.softmax(X, 2, axis="a"), TypeError, "axis"),
    "pack axis huge": (lambda: exaq_cpu.pack(CODES, 2, axis=2**70), ValueError, "axis"),
    "softmax axis huge": (lambda: exaq_cpu.softmax(X, 2, axis=2**70), ValueError, "axis"),
    "softmax packed axis huge": (lambda: exaq_cpu.softmax(X, 2, axis=-2**70, output="packed"), ValueError, "axis"),
    "lutsum axis huge": (lambda: exaq_cpu.lutsum(np.zeros((2, 2), np.uint8), 2, np.ones(4), axis=2**70),
                         ValueError, "axis"),
    "quantize axis huge": (lambda: exaq_cpu.quantize(X, 2, axis=2**70), ValueError, "axis"),
    "score_stats axis huge": (lambda: exaq_cpu.score_stats(X, axis=2**70), ValueError, "axis"),
    # clip, floor
    "softmax clip positive": (lambda: exaq_cpu.softmax(X, 2, clip=1.0), ValueError, "clip"),
    "softmax clip list": (lambda: exaq_cpu.softmax(X, 2, clip=["a"]), TypeError, "clip"),
    "softmax clip positive array": (lambda: exaq_cpu.softmax(X, 2, clip=[1]), ValueError, "clip"),
    "softmax clip unknown": (lambda: exaq_cpu.softmax(X, 2, clip="nope"), ValueError, "clip"),
    "softmax floor": (lambda: exaq_cpu.softmax(X, 2, floor="one"), ValueError, "floor"),
    # loaders: a corrupt or foreign file is a ValueError
    "PackedSoftmax.load junk": (lambda: PackedSoftmax.load(io.BytesIO(b"junk")), ValueError, "PackedSoftmax"),
    "BCQMatrix.load junk": (lambda: lutgemm.BCQMatrix.load(io.BytesIO(b"junk")), ValueError, "BCQMatrix"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_contract(name):
    call, kind, word = CASES[name]
    with pytest.raises(kind) as info:
        call()
    assert type(info.value) is kind or not issubclass(type(info.value), (OverflowError, KeyError)), name
    assert word.lower() in str(info.value).lower(), (name, str(info.value))


def test_backend_names():
    with pytest.raises(ValueError, match="backend"):
        exaq_cpu.set_backend("sse9")


# wrong dtypes and Python types in the packed and LUT-GEMM APIs, as in softmax: TypeError
MORE = {
    "unpack dtype": (lambda: exaq_cpu.unpack(np.zeros(3, np.int16), 2), TypeError, "uint8"),
    "lutsum dtype": (lambda: exaq_cpu.lutsum([1, 2], 2, np.ones(4)), TypeError, "uint8"),
    "lutsum n str": (lambda: exaq_cpu.lutsum(np.zeros(2, np.uint8), 2, np.ones(4), n="8"), TypeError, "n "),
    "PackedSoftmax codes list": (lambda: PackedSoftmax([[0]], np.zeros((2, 4), np.float32), np.zeros(2, np.int64),
                                                       None, 2, (2, 8), 1), TypeError, "codes"),
    "BCQMatrix shape str": (lambda: lutgemm.BCQMatrix(np.zeros(8, np.uint8), np.zeros(1, np.float32),
                                                      np.zeros(1, np.float32), "ab", 2, 8), ValueError, "shape"),
    "from_uniform float codes": (lambda: lutgemm.BCQMatrix.from_uniform(np.zeros((4, 16)), np.ones((4, 2)),
                                                                        np.zeros((4, 2)), 8), TypeError, "codes"),
    "bcq quantize W dtype": (lambda: lutgemm.quantize_weights(np.ones((4, 16), np.int32), 2), TypeError, "W"),
    "lut_gemm x dtype": (lambda: lutgemm.lut_gemm(np.ones(16, np.int64), _w()), TypeError, "x"),
    "lut_gemm out dtype": (lambda: lutgemm.lut_gemm(np.ones(16, np.float32), _w(), out=np.empty(4)), TypeError, "out"),
    "Calibrator n_calib str": (lambda: clipping.Calibrator(n_calib="3"), TypeError, "n_calib"),
    "Calibrator name int": (lambda: clipping.Calibrator().observe(3, X), TypeError, "name"),
    "Calibrator.from_json int": (lambda: clipping.Calibrator.from_json(123), TypeError, "text"),
    "optimal_clip sigma str": (lambda: clipping.optimal_clip("1", 2), TypeError, "sigma"),
    "softmax out list": (lambda: exaq_cpu.softmax(X, 2, out=[1]), TypeError, "out"),
    "softmax x str": (lambda: exaq_cpu.softmax("abc", 2), TypeError, "x"),
    "set_backend int": (lambda: exaq_cpu.set_backend(3), TypeError, "backend"),
}


@pytest.mark.parametrize("name", list(MORE))
def test_error_contract_types(name):
    call, kind, word = MORE[name]
    with pytest.raises(kind) as info:
        call()
    assert type(info.value) is kind, (name, type(info.value))
    assert word.lower() in str(info.value).lower(), (name, str(info.value))
