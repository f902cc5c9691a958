"""CPU torch tensors through the kernel calls: zero-copy in, tensors out,
optional dependency (nothing imports torch unless a tensor is passed)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import exaq_cpu
from exaq_cpu import _torch
from exaq_cpu import lutgemm as L

try:
    import torch
except ImportError:  # pragma: no cover - CI installs torch (README test command)
    if os.environ.get("CI"):
        raise
    pytest.skip("torch is not installed", allow_module_level=True)

GEN = torch.Generator().manual_seed(3)


def scores(*shape):
    return torch.randn(*shape, generator=GEN) * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bits", [2, 3, None])
def test_softmax_of_a_tensor_is_a_tensor_equal_to_the_numpy_result(dtype, bits):
    x = scores(5, 37).to(dtype)
    y = exaq_cpu.softmax(x, bits)
    ref = exaq_cpu.softmax(x.to(torch.float32).numpy() if dtype == torch.bfloat16 else x.numpy(), bits)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == x.shape
    assert np.array_equal(y.numpy(), ref)


def test_tensors_are_read_in_place():
    x = scores(3, 40)
    view = _torch.to_numpy(x)
    assert np.shares_memory(view, x.numpy())
    strided = x.t()  # any strides: read through the view, no copy
    assert np.shares_memory(_torch.to_numpy(strided), x.numpy())
    assert torch.equal(exaq_cpu.softmax(strided, 2, axis=0), exaq_cpu.softmax(x, 2).t())


def test_requires_grad_is_read_without_autograd():
    x = scores(4, 64).requires_grad_()
    y = exaq_cpu.softmax(x, 2)
    assert not y.requires_grad and torch.equal(y, exaq_cpu.softmax(x.detach(), 2))


def test_out_tensor_is_written_in_place_and_returned():
    x = scores(6, 100)
    out = torch.empty(6, 100)
    assert exaq_cpu.softmax(x, 2, out=out) is out
    assert torch.equal(out, exaq_cpu.softmax(x, 2))
    out64 = torch.empty(6, 100, dtype=torch.float64)
    exaq_cpu.softmax(x, 2, out=out64)
    assert torch.equal(out64, exaq_cpu.softmax(x, 2).double())
    cols = torch.empty(100, 6).t()  # a non-contiguous out
    exaq_cpu.softmax(x, None, out=cols)
    assert torch.equal(cols, exaq_cpu.softmax(x, None))
    with pytest.raises(ValueError, match="require grad"):
        exaq_cpu.softmax(x, 2, out=torch.empty(6, 100, requires_grad=True))
    with pytest.raises(TypeError, match="bfloat16"):
        exaq_cpu.softmax(x, 2, out=torch.empty(6, 100, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="shape"):
        exaq_cpu.softmax(x, 2, out=torch.empty(6, 99))


def test_quantize_packed_and_stats_of_tensors():
    x = scores(4, 50)
    q = exaq_cpu.quantize(x, 2)
    ref = exaq_cpu.quantize(x.numpy(), 2)
    assert isinstance(q.codes, torch.Tensor) and q.codes.dtype == torch.uint8
    assert np.array_equal(q.codes.numpy(), ref.codes) and np.array_equal(q.table.numpy(), ref.table)
    packed = exaq_cpu.softmax(x, 2, output="packed")
    assert isinstance(packed, exaq_cpu.PackedSoftmax)
    assert np.array_equal(packed.to_float(), exaq_cpu.softmax(x.numpy(), 2))
    assert exaq_cpu.score_stats(x) == exaq_cpu.score_stats(x.numpy())


def test_lut_gemm_of_tensors():
    W = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32)
    Wq = L.quantize_weights(W, bits=3, group_size=128, method="greedy")
    x = scores(2, 256)
    y = L.lut_gemm(x, Wq)
    assert isinstance(y, torch.Tensor) and np.array_equal(y.numpy(), L.lut_gemm(x.numpy(), Wq))
    out = torch.empty(2, 48)
    assert L.lut_gemm(x.to(torch.bfloat16), Wq, out=out) is out
    assert np.array_equal(out.numpy(), L.lut_gemm(x.to(torch.bfloat16).float().numpy(), Wq))


def test_numpy_programs_never_import_torch():
    code = ("import sys, numpy as np, exaq_cpu\n"
            "from exaq_cpu import lutgemm\n"
            "exaq_cpu.softmax(np.ones((2, 8), np.float32), 2)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
