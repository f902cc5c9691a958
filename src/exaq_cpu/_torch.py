"""CPU torch tensors in and out of the kernel calls, without importing torch.

torch stays optional: a value is a tensor only if torch is already imported
(``sys.modules``) and the value is a ``torch.Tensor``, so a NumPy-only program
never loads it.  Tensors are read through NumPy views of their memory
(``Tensor.numpy()`` after ``detach()``: zero-copy for float16/32/64, any
strides); bfloat16, which NumPy has no type for, is widened to float32 first
(the kernels compute in float32 anyway).  A tensor that requires grad is read
as its values: the results carry no autograd history (the kernels have no
backward).  Results come back as tensors sharing the NumPy result's memory.
"""
from __future__ import annotations

import sys

import numpy as np


def is_tensor(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def any_tensor(*values) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and any(isinstance(v, torch.Tensor) for v in values)


def to_numpy(tensor, argument: str = "x", writable: bool = False) -> np.ndarray:
    """A NumPy view of a CPU tensor's values (a float32 copy for bfloat16)."""
    import torch

    if tensor.device.type != "cpu":
        raise ValueError(f"{argument} must be a CPU tensor, got one on {tensor.device}")
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        if writable:
            raise TypeError(f"{argument} must be a float16/float32/float64 tensor to be written into, "
                            f"got bfloat16")
        return tensor.to(torch.float32).numpy()
    if tensor.is_conj() or tensor.is_neg():  # lazy views NumPy cannot read
        tensor = tensor.resolve_conj().resolve_neg()
    return tensor.numpy()


def from_numpy(array):
    import torch

    return torch.from_numpy(array)  # the library's results are fresh, writable arrays
