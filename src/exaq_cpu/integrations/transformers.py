"""EXAQ softmax as a Hugging Face ``transformers`` attention implementation.

    import exaq_cpu.integrations.transformers as exaq_hf
    exaq_hf.register("exaq", bits=2)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="exaq")

Every attention softmax of the model then runs through :func:`exaq_cpu.softmax`
(one call per layer over all heads and queries of the step, so the pooled clip
statistics are those of the layer's call, as in ``python -m exaq_cpu.llama``).
The rest of the attention is eager attention's: scores ``q @ k^T * scaling``,
the model's additive mask (its "masked" value, the dtype's minimum, becomes
``-inf``, which the softmax gives exactly 0), grouped-query heads repeated, and
``probs @ v``.  Inference only: the probabilities carry no autograd history
(the kernels have no backward).  CPU tensors only.
"""
from __future__ import annotations

from typing import Optional

import exaq_cpu

__all__ = ["register", "attention_function"]


def attention_function(bits: Optional[int] = 2, clip="gauss", floor: str = "exp", **softmax_kwargs):
    """The attention callable :func:`register` installs (``AttentionInterface`` signature).

    ``bits=None`` is the exact softmax; other arguments as for :func:`exaq_cpu.softmax`.
    """
    import torch

    if bits is None and clip != "gauss":
        raise ValueError("clip has no meaning for the exact softmax (bits=None)")
    kwargs = dict(softmax_kwargs)
    if bits is not None:
        kwargs.update(clip=clip, floor=floor)
    exaq_cpu.softmax(torch.zeros(1, 2), bits, **kwargs)  # a bad argument fails here, not inside the model

    def exaq_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_):
        if query.device.type != "cpu":
            raise ValueError(f"exaq attention runs on CPU tensors, got {query.device}")
        batch, heads, queries, head_dim = query.shape
        kv_heads, keys = key.shape[1], key.shape[2]
        groups = heads // kv_heads
        if scaling is None:
            scaling = head_dim ** -0.5
        # grouped-query attention without repeating K and V: the `groups` query heads
        # of key/value head h are rows of one matmul with it
        q = query.reshape(batch, kv_heads, groups * queries, head_dim)
        scores = torch.matmul(q.detach(), key.detach().transpose(2, 3)).mul_(scaling)  # inference only
        scores = scores.view(batch, heads, queries, keys)
        if scores.dtype != torch.float32:
            scores = scores.to(torch.float32)
        if attention_mask is not None:
            bias = attention_mask[:, :, :, :keys]
            masked = bias <= torch.finfo(bias.dtype).min / 2  # eager's "masked" value: exactly 0 here
            scores = scores.add_(bias.masked_fill(masked, 0)).masked_fill_(masked, float("-inf"))
        probs = exaq_cpu.softmax(scores, bits, out=scores, **kwargs)
        if probs.dtype != query.dtype:
            probs = probs.to(query.dtype)
        if dropout and module.training:
            probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
        context = torch.matmul(probs.view(batch, kv_heads, groups * queries, keys), value)
        output = context.view(batch, heads, queries, head_dim).transpose(1, 2).contiguous()
        return output, probs

    return exaq_attention


def register(name: str = "exaq", bits: Optional[int] = 2, clip="gauss", floor: str = "exp",
             **softmax_kwargs) -> str:
    """Register an attention implementation ``name`` with transformers.

    Afterwards ``from_pretrained(..., attn_implementation=name)`` (or
    ``model.set_attn_implementation(name)``) runs every attention softmax through
    :func:`exaq_cpu.softmax` with these arguments (``bits=None``: the exact
    kernel).  The model gets eager attention's additive mask (causal and
    padding), which becomes ``-inf`` here.  Returns ``name``.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    AttentionInterface.register(name, attention_function(bits, clip, floor, **softmax_kwargs))
    AttentionMaskInterface.register(name, eager_mask)
    return name
