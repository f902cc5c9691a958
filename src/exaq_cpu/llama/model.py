"""NumPy forward pass of a LLaMA-architecture model with pluggable softmax and linear layers.

Everything is float32. One call of :meth:`LlamaModel.forward` processes a run of new tokens
(a whole prompt or window at once with batched matrix products, or one token when decoding)
against a preallocated :class:`KVCache`.

Two seams exist for the rest of the library:

* **Attention softmax** — an :class:`AttentionSoftmax` receives, per layer, the scaled and masked
  scores of *all* heads, queries and keys of that layer's call (shape ``(heads, queries, keys)``,
  masked entries ``-inf``) and returns the probabilities. :class:`FloatSoftmax` is exact NumPy,
  :class:`ExaqSoftmax` calls :func:`exaq_cpu.softmax` (imported lazily so this module works without
  the compiled core).
* **Linear layers** — a :class:`Linear` maps ``(tokens, in_features) -> (tokens, out_features)``.
  :class:`FloatLinear` is a NumPy matmul, :class:`BCQLinear` quantizes the weight with
  :func:`exaq_cpu.lutgemm.quantize` and runs :func:`exaq_cpu.lutgemm.lut_gemm`.
  :class:`GGUFLinearFactory` builds :class:`GGUFLinear` layers from the file's own quantized
  blocks (:meth:`exaq_cpu.lutgemm.BCQMatrix.from_gguf`, exact), including the output head.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .gguf_loader import GGUFContents, LlamaConfig

__all__ = [
    "AttentionSoftmax",
    "BCQLinear",
    "ExaqSoftmax",
    "FloatLinear",
    "FloatSoftmax",
    "ForwardStats",
    "GGUFLinear",
    "GGUFLinearFactory",
    "KVCache",
    "Linear",
    "LinearFactory",
    "LlamaModel",
    "LlamaWeights",
    "bcq_linear_factory",
    "exaq_clip_modes",
    "make_softmax",
]


# --------------------------------------------------------------------------------------------
# Linear layers
# --------------------------------------------------------------------------------------------


class Linear(Protocol):
    """``y = x @ W.T`` for a weight ``W`` of shape ``(out_features, in_features)``."""

    out_features: int
    in_features: int

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (tokens, in) -> (tokens, out)
        ...


class FloatLinear:
    """Dense float32 linear layer (a BLAS matmul)."""

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.out_features, self.in_features = self.weight.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T

    def __repr__(self) -> str:
        return f"FloatLinear({self.in_features} -> {self.out_features})"


class BCQLinear:
    """Linear layer with a binary-coding-quantized weight, run by the LUT-GEMM kernel.

    The weight is quantized once at construction (``wbits`` bit-planes, one scale per
    ``group_size`` input columns, fitted by ``method`` with ``iters`` alternating rounds); the
    float weight is not kept. ``threads`` is handed to the LUT kernel (``None``: its default).
    """

    def __init__(
        self,
        weight: np.ndarray,
        wbits: int,
        group_size: int,
        method: str = "alternating",
        iters: int | None = None,
        threads: int | None = None,
    ) -> None:
        from exaq_cpu import lutgemm  # lazy: the LUT-GEMM module may not be built

        self._lut_gemm = lutgemm.lut_gemm
        self.out_features, self.in_features = weight.shape
        self.wbits = wbits
        self.group_size = group_size
        self.threads = threads
        self.qweight = lutgemm.quantize_weights(
            np.ascontiguousarray(weight, dtype=np.float32),
            bits=wbits,
            group_size=group_size,
            method=method,
            iters=iters,
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self._lut_gemm(x, self.qweight, threads=self.threads), dtype=np.float32)

    def __repr__(self) -> str:
        return f"BCQLinear({self.in_features} -> {self.out_features}, wbits={self.wbits}, group={self.group_size})"


#: Builds the linear layer for one (fused) weight matrix of shape ``(out, in)``.
LinearFactory = Callable[[np.ndarray], Linear]


def bcq_linear_factory(
    wbits: int,
    group_size: int,
    method: str = "alternating",
    iters: int | None = None,
    threads: int | None = None,
) -> LinearFactory:
    """A :data:`LinearFactory` producing :class:`BCQLinear` layers (arguments as there).

    Raises ``ValueError`` for settings :func:`exaq_cpu.lutgemm.quantize` would reject.
    """
    from exaq_cpu import lutgemm
    # Fail on bad settings now, not after loading the model: quantize a tiny matrix.
    lutgemm.quantize_weights(
        np.zeros((1, group_size), np.float32), bits=wbits, group_size=group_size, method=method, iters=iters
    )
    return lambda weight: BCQLinear(weight, wbits, group_size, method, iters, threads)


class GGUFLinear:
    """Linear layer whose weight is the GGUF file's own quantized blocks, imported exactly as BCQ.

    ``parts`` are :class:`~exaq_cpu.lutgemm.BCQMatrix` / :class:`~exaq_cpu.lutgemm.BCQStack`
    matrices (or float32 arrays, for tensors the file stores unquantized) whose outputs are
    concatenated: a fused projection whose tensors share one format is a single part.
    """

    def __init__(self, parts: Sequence, threads: int | None = None, precision: str | None = None) -> None:
        from exaq_cpu import lutgemm  # lazy: the LUT-GEMM module may not be built

        self._lut_gemm = lutgemm.lut_gemm
        self.parts = list(parts)
        self.threads = threads
        self.precision = precision  # lut_gemm's: None is its default (int8 tables)
        self.in_features = self.parts[0].shape[1]
        self.out_features = sum(p.shape[0] for p in self.parts)

    def _one(self, part, x: np.ndarray) -> np.ndarray:
        if isinstance(part, np.ndarray):
            return x @ part.T
        return self._lut_gemm(x, part, threads=self.threads, precision=self.precision)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(self.parts) == 1:
            return self._one(self.parts[0], x)
        return np.concatenate([self._one(p, x) for p in self.parts], axis=-1)

    def __repr__(self) -> str:
        kinds = ",".join("float" if isinstance(p, np.ndarray) else str(p.method) for p in self.parts)
        return f"GGUFLinear({self.in_features} -> {self.out_features}, {kinds})"


#: Storage types left as float32 matmuls by :class:`GGUFLinearFactory` (they are not quantized).
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


class GGUFLinearFactory:
    """Builds each linear layer, and the output head, from the GGUF file's quantized blocks.

    ``raw``: tensor name -> ``gguf.ReaderTensor`` (:attr:`GGUFContents.raw`); ``tensors``: the
    float32 arrays of the same file, used for tensors stored unquantized (F32/F16/BF16).
    :class:`LlamaModel` calls :meth:`from_tensors` with the names of the tensors a (fused) layer
    stacks. Tensors in a block format :meth:`~exaq_cpu.lutgemm.BCQMatrix.from_gguf` does not
    take (IQ*, TQ*, ...) raise ``ValueError``.
    """

    #: LlamaModel also runs the output head (the tied embedding if the file ties them) through it.
    output_head = True

    def __init__(self, raw: dict, tensors: dict | None = None, threads: int | None = None,
                 precision: str | None = None) -> None:
        self.raw = raw
        self.tensors = tensors or {}
        self.threads = threads
        self.precision = precision  # lut_gemm's table precision ("int8" default, or "exact")

    def __call__(self, weight: np.ndarray) -> Linear:
        raise TypeError("GGUFLinearFactory builds layers from tensor names: use from_tensors(names)")

    def from_tensors(self, names: Sequence[str]) -> GGUFLinear:
        from exaq_cpu import lutgemm

        groups: list[tuple[str, list]] = []  # runs of consecutive tensors of one storage type
        for name in names:
            tensor = self.raw.get(name)
            if tensor is None:
                raise ValueError(f"GGUF file lacks tensor {name!r}")
            kind = tensor.tensor_type.name
            if groups and groups[-1][0] == kind:
                groups[-1][1].append(tensor)
            else:
                groups.append((kind, [tensor]))
        parts = []
        for kind, run in groups:
            if kind in _FLOAT_TYPES:
                parts.append(np.concatenate([np.ascontiguousarray(self.tensors[t.name], np.float32) for t in run]))
                continue
            if len(run) == 1:
                parts.append(lutgemm.BCQMatrix.from_gguf(run[0]))
                continue
            shapes = [tuple(int(v) for v in reversed(np.asarray(t.shape).reshape(-1))) for t in run]
            cols = {shape[1] for shape in shapes}
            if len(cols) != 1 or any(len(shape) != 2 for shape in shapes):
                raise ValueError(f"tensors {[t.name for t in run]} cannot be stacked: shapes {shapes}")
            data = np.concatenate([np.asarray(t.data).reshape(shape[0], -1) for t, shape in zip(run, shapes)])
            rows = sum(shape[0] for shape in shapes)
            parts.append(lutgemm.BCQMatrix.from_gguf(data, run[0].tensor_type, (rows, cols.pop())))
        return GGUFLinear(parts, self.threads, self.precision)


# --------------------------------------------------------------------------------------------
# Attention softmax
# --------------------------------------------------------------------------------------------


class AttentionSoftmax(Protocol):
    """Softmax over the last axis of one layer's attention scores ``(heads, queries, keys)``.

    ``scores`` is a temporary of the attention: an implementation may overwrite it and return it,
    which saves allocating (and page-faulting) a fresh output of the same size on every call.
    """

    #: Short description used in reports, e.g. ``"float"`` or ``"exaq-2bit-gauss"``.
    label: str

    def __call__(self, scores: np.ndarray, layer: int) -> np.ndarray: ...


class FloatSoftmax:
    """Exact float32 softmax in NumPy; overwrites ``scores`` (which is a temporary) for speed."""

    label = "float"

    def __call__(self, scores: np.ndarray, layer: int) -> np.ndarray:
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)  # masked -inf entries become exactly 0
        scores /= scores.sum(axis=-1, keepdims=True)
        return scores


#: ``--clip`` modes handed to :func:`exaq_cpu.softmax` as they are; "none"/"naive" mean no clip.
EXAQ_CLIP_MODES = ("gauss", "row", "laplace", "table", "none", "naive")
#: ``--clip`` mode for static per-layer clips from :class:`exaq_cpu.clipping.Calibrator`.
STATIC_CLIP = "static"


def exaq_clip_modes() -> tuple[str, ...]:
    """Every named ``clip`` mode :func:`make_softmax` accepts."""
    from exaq_cpu.clipping import STATS_CLIP_MODES

    modes = list(EXAQ_CLIP_MODES) + [STATIC_CLIP]
    return tuple(modes + [mode for mode in STATS_CLIP_MODES if mode not in modes])


class ExaqSoftmax:
    """EXAQ quantized softmax (:func:`exaq_cpu.softmax`) with a fixed or calibrated clip.

    Parameters
    ----------
    bits:
        Width of the exponent codes (2, 3, 4, ...).
    clip:
        ``"gauss"``, ``"row"``, ``"laplace"``, ``"table"`` (and the other solver modes of
        ``exaq_cpu.clipping``), ``"none"`` (naive: the observed range), a negative float (the same
        static clip for every layer), or ``"static"``: per-layer static clips from a
        :class:`exaq_cpu.clipping.Calibrator` (clip law ``calib_law``), computed dynamically
        during the first ``n_calib`` calls of each layer and frozen afterwards.
    floor:
        ``"exp"`` (codes below the clip contribute ``exp(lo)``) or ``"zero"``.
    """

    def __init__(
        self,
        bits: int,
        clip: str | float | None = "gauss",
        floor: str = "exp",
        *,
        n_calib: int = 25,
        calib_law: str = "gauss",
    ) -> None:
        from exaq_cpu import softmax as exaq_softmax  # lazy: needs the compiled core

        self._softmax = exaq_softmax
        self.bits = bits
        self.floor = floor
        self.calibrator = None
        if clip == STATIC_CLIP:
            from exaq_cpu.clipping import Calibrator

            self.calibrator = Calibrator(n_calib=n_calib, bits=bits, law=calib_law, floor=floor)
            self.clip: str | float | None = STATIC_CLIP
            clip_name = f"static-{calib_law}"
        elif clip in (None, "none", "naive"):
            self.clip = None
            clip_name = "naive"
        else:
            self.clip = clip
            clip_name = f"{clip:g}" if isinstance(clip, float) else clip
        self.label = f"exaq-{bits}bit-{clip_name}" + ("" if floor == "exp" else f"-floor{floor}")

    def __call__(self, scores: np.ndarray, layer: int) -> np.ndarray:
        clip = self.clip
        if self.calibrator is not None:
            clip = float(self.calibrator.observe(f"layer.{layer}", scores, axis=-1))
        # In place (supported by exaq_cpu.softmax): no new output buffer per call, as FloatSoftmax.
        return self._softmax(scores, self.bits, axis=-1, clip=clip, floor=self.floor, out=scores)


def make_softmax(
    kind: str = "float",
    bits: int | None = 2,
    clip: str | float | None = "gauss",
    floor: str = "exp",
    *,
    n_calib: int = 25,
    calib_law: str = "gauss",
) -> AttentionSoftmax:
    """Build the attention softmax named by the CLI options (``kind`` is ``"float"`` or ``"exaq"``).

    Raises ``ValueError`` for bad options and ``RuntimeError`` when the EXAQ kernels (or, for
    ``clip="static"``, ``exaq_cpu.clipping``) are not available.
    """
    if kind == "float":
        return FloatSoftmax()
    if kind != "exaq":
        raise ValueError(f"softmax must be 'float' or 'exaq', got {kind!r}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"EXAQ needs an int bits, got {type(bits).__name__} {bits!r}")
    if int(bits) not in (2, 3, 4):  # what the kernels take (exaq_cpu.clipping.KERNEL_BITS)
        raise ValueError(f"EXAQ needs bits 2, 3 or 4, got {bits!r}")
    if floor not in ("exp", "zero"):
        raise ValueError(f"floor must be 'exp' or 'zero', got {floor!r}")
    modes = exaq_clip_modes()
    if isinstance(clip, str) and clip not in modes:
        try:
            clip = float(clip)
        except ValueError:
            raise ValueError(f"clip must be one of {', '.join(modes)} or a negative number, got {clip!r}") from None
    if isinstance(clip, (int, float)) and not clip < 0:
        raise ValueError(f"a fixed clip value must be negative, got {clip}")
    if isinstance(clip, int):
        clip = float(clip)
    softmax = ExaqSoftmax(int(bits), clip, floor, n_calib=n_calib, calib_law=calib_law)
    if softmax.calibrator is not None:
        # The Calibrator validates its law lazily; a failure on the first layer is a poor error.
        from exaq_cpu.clipping import CLIP_MODES

        if calib_law not in CLIP_MODES:
            raise ValueError(f"calibration law must be one of {', '.join(CLIP_MODES)}, got {calib_law!r}")
    return softmax


# --------------------------------------------------------------------------------------------
# Weights, cache, model
# --------------------------------------------------------------------------------------------


@dataclass
class LayerWeights:
    """Float32 weights of one transformer block, with projections fused for fewer matmuls."""

    attn_norm: np.ndarray  # (d_model,)
    qkv: np.ndarray  # (q_dim + 2 * kv_dim, d_model): attn_q, attn_k, attn_v stacked
    attn_output: np.ndarray  # (d_model, q_dim)
    ffn_norm: np.ndarray  # (d_model,)
    gate_up: np.ndarray  # (2 * d_ff, d_model): ffn_gate, ffn_up stacked
    ffn_down: np.ndarray  # (d_model, d_ff)


@dataclass
class LlamaWeights:
    """All float32 weights of a model; shared by every :class:`LlamaModel` variant built from them."""

    config: LlamaConfig
    token_embedding: np.ndarray  # (vocab, d_model)
    layers: list[LayerWeights]
    output_norm: np.ndarray  # (d_model,)
    output: np.ndarray  # (vocab, d_model); the embedding itself when the file ties them
    rope_freq_factors: np.ndarray | None = None  # llama3-style per-frequency divisors
    #: The file's name of the output head: ``"output.weight"``, or ``"token_embd.weight"`` if tied.
    output_name: str = "output.weight"

    @classmethod
    def from_gguf(cls, contents: GGUFContents) -> LlamaWeights:
        """Arrange the tensors of a loaded GGUF (see :func:`~exaq_cpu.llama.gguf_loader.load_gguf`)."""
        t = contents.tensors
        cfg = contents.config

        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        d, ff = cfg.d_model, cfg.d_ff
        # Shapes the metadata implies; a file whose tensors say otherwise is refused here rather
        # than failing (or silently broadcasting) somewhere inside the forward pass.
        expected = {"attn_norm.weight": (d,), "ffn_norm.weight": (d,), "attn_q.weight": (q_dim, d),
                    "attn_k.weight": (kv_dim, d), "attn_v.weight": (kv_dim, d),
                    "attn_output.weight": (d, q_dim), "ffn_gate.weight": (ff, d),
                    "ffn_up.weight": (ff, d), "ffn_down.weight": (d, ff),
                    "token_embd.weight": (cfg.vocab_size, d), "output.weight": (cfg.vocab_size, d),
                    "output_norm.weight": (d,), "rope_freqs.weight": (cfg.rope_dims // 2,)}

        def check(name: str, array: np.ndarray) -> np.ndarray:
            shape = expected[name.split(".", 2)[-1] if name.startswith("blk.") else name]
            if array.shape != shape:
                raise ValueError(f"GGUF tensor {name!r} has shape {array.shape}; the metadata implies {shape}")
            return array

        def get(name: str) -> np.ndarray:
            try:
                return check(name, t[name])
            except KeyError:
                raise ValueError(f"GGUF file lacks tensor {name!r}") from None

        freq_factors = t.get("rope_freqs.weight")
        if freq_factors is not None:
            check("rope_freqs.weight", freq_factors)
            if not (np.all(np.isfinite(freq_factors)) and np.all(freq_factors > 0)):
                raise ValueError("GGUF tensor 'rope_freqs.weight' must be finite and positive")

        layers = []
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            layers.append(
                LayerWeights(
                    attn_norm=get(p + "attn_norm.weight"),
                    qkv=np.concatenate([get(p + "attn_q.weight"), get(p + "attn_k.weight"), get(p + "attn_v.weight")]),
                    attn_output=get(p + "attn_output.weight"),
                    ffn_norm=get(p + "ffn_norm.weight"),
                    gate_up=np.concatenate([get(p + "ffn_gate.weight"), get(p + "ffn_up.weight")]),
                    ffn_down=get(p + "ffn_down.weight"),
                )
            )
        embedding = get("token_embd.weight")
        return cls(
            config=cfg,
            token_embedding=embedding,
            layers=layers,
            output_norm=get("output_norm.weight"),
            output=get("output.weight") if "output.weight" in t else embedding,
            rope_freq_factors=freq_factors,
            output_name="output.weight" if "output.weight" in t else "token_embd.weight",
        )


class KVCache:
    """Preallocated keys and values of every layer: ``(layers, kv_heads, max_tokens, head_dim)``."""

    def __init__(self, config: LlamaConfig, max_tokens: int) -> None:
        if max_tokens <= 0:
            raise ValueError(f"a KV cache needs room for at least one token, got {max_tokens}")
        shape = (config.n_layers, config.n_kv_heads, max_tokens, config.head_dim)
        self.keys = np.empty(shape, dtype=np.float32)
        self.values = np.empty(shape, dtype=np.float32)
        self.max_tokens = max_tokens
        self.length = 0  # tokens stored so far (the position of the next token)

    def reset(self) -> None:
        """Forget the cached tokens (the buffers are reused)."""
        self.length = 0


@dataclass
class ForwardStats:
    """Wall time spent by a model, for throughput and the softmax share."""

    tokens: int = 0
    forward_seconds: float = 0.0
    softmax_seconds: float = 0.0

    @property
    def softmax_share(self) -> float:
        return self.softmax_seconds / self.forward_seconds if self.forward_seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.forward_seconds if self.forward_seconds else 0.0

    def reset(self) -> None:
        self.tokens, self.forward_seconds, self.softmax_seconds = 0, 0.0, 0.0


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    mean_square = np.einsum("td,td->t", x, x)[:, None] / np.float32(x.shape[-1])
    return x * (weight / np.sqrt(mean_square + np.float32(eps)))  # one (tokens, d) product fewer


def _silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x).  exp(-x) overflows to inf for x << 0, where x / inf = -0 is right:
    callers run it under np.errstate(over="ignore") (forward() once for all layers)."""
    return x / (np.float32(1.0) + np.exp(-x))


class LlamaModel:
    """A LLaMA forward pass over shared :class:`LlamaWeights`.

    Parameters
    ----------
    weights:
        Float weights (build once with :meth:`LlamaWeights.from_gguf`, share between variants).
    softmax:
        The attention softmax (default: exact float).
    linear:
        Factory for the transformer blocks' linear layers (default: float32 NumPy). The token
        embedding stays float32; so does the output head, unless the factory has
        ``output_head = True`` (:class:`GGUFLinearFactory`). A factory with a ``from_tensors``
        method is given the file's tensor names of each layer instead of the float weight.
    """

    def __init__(
        self,
        weights: LlamaWeights,
        softmax: AttentionSoftmax | None = None,
        linear: LinearFactory = FloatLinear,
    ) -> None:
        self.weights = weights
        self.config = cfg = weights.config
        self.softmax = softmax if softmax is not None else FloatSoftmax()
        self.stats = ForwardStats()
        self._qkv, self._attn_out, self._gate_up, self._down = [], [], [], []
        from_tensors = getattr(linear, "from_tensors", None)
        for i, layer in enumerate(weights.layers):
            if from_tensors is not None:
                p = f"blk.{i}."
                self._qkv.append(from_tensors([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]))
                self._attn_out.append(from_tensors([p + "attn_output.weight"]))
                self._gate_up.append(from_tensors([p + "ffn_gate.weight", p + "ffn_up.weight"]))
                self._down.append(from_tensors([p + "ffn_down.weight"]))
                continue
            self._qkv.append(linear(layer.qkv))
            self._attn_out.append(linear(layer.attn_output))
            self._gate_up.append(linear(layer.gate_up))
            self._down.append(linear(layer.ffn_down))
        self._output: Linear | None = None
        if getattr(linear, "output_head", False):
            if from_tensors is not None:
                self._output = from_tensors([weights.output_name])
            else:
                self._output = linear(weights.output)

        self._q_dim = cfg.n_heads * cfg.head_dim
        self._kv_dim = cfg.n_kv_heads * cfg.head_dim
        self._scale = np.float32(1.0 / np.sqrt(cfg.head_dim))
        if cfg.rope_dims % 2 or cfg.rope_dims > cfg.head_dim:
            raise ValueError(f"RoPE dimension count {cfg.rope_dims} does not fit head size {cfg.head_dim}")
        inv_freq = cfg.rope_base ** (-np.arange(0, cfg.rope_dims, 2, dtype=np.float64) / cfg.rope_dims)
        if weights.rope_freq_factors is not None:
            inv_freq = inv_freq / weights.rope_freq_factors.astype(np.float64)
        self._inv_freq = inv_freq
        self._rope_cos = np.empty((0, cfg.rope_dims // 2), np.float32)
        self._rope_sin = np.empty((0, cfg.rope_dims // 2), np.float32)

    @classmethod
    def from_gguf(
        cls,
        path: str | None = None,
        softmax: AttentionSoftmax | None = None,
        linear: LinearFactory = FloatLinear,
    ) -> LlamaModel:
        """Load a GGUF file (``None``: the default SmolLM2 model) and build a model from it."""
        from .gguf_loader import load_gguf

        return cls(LlamaWeights.from_gguf(load_gguf(path)), softmax, linear)

    def new_cache(self, max_tokens: int | None = None) -> KVCache:
        """An empty :class:`KVCache` for up to ``max_tokens`` (default: the model's context length)."""
        return KVCache(self.config, max_tokens or self.config.context_length)

    # -- RoPE -----------------------------------------------------------------------------

    def _rope_tables(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        if stop > len(self._rope_cos):
            size = max(stop, 2 * len(self._rope_cos), 256)
            positions = np.arange(size, dtype=np.float64) / self.config.rope_scale
            angles = positions[:, None] * self._inv_freq[None, :]
            self._rope_cos = np.cos(angles).astype(np.float32)
            self._rope_sin = np.sin(angles).astype(np.float32)
            # per dimension (pairs interleaved): cos, cos and -sin, +sin, for the one-token rotation
            self._rope_cos2 = np.repeat(self._rope_cos, 2, axis=1)
            self._rope_sin2 = np.repeat(self._rope_sin, 2, axis=1)
            self._rope_sin2[:, 0::2] *= -1
        return self._rope_cos, self._rope_sin

    def _apply_rope(self, x: np.ndarray, start: int) -> None:
        """Rotate ``x`` (tokens, heads, head_dim) in place for positions ``start, start+1, ...``.

        llama.cpp's "normal" RoPE, which llama GGUF weights are laid out for: dimension pairs
        ``(2i, 2i+1)`` of the first ``rope_dims`` dimensions rotate by ``pos * base^(-2i/rope_dims)``.
        """
        tokens = x.shape[0]
        cos_table, sin_table = self._rope_tables(start + tokens)
        rot = self.config.rope_dims
        if tokens == 1 and x.flags.c_contiguous:  # a decode step: the same products, fewer NumPy calls
            head = x[0, :, :rot]
            swapped = head.reshape(x.shape[1], rot // 2, 2)[:, :, ::-1].reshape(x.shape[1], rot)
            # even: e*c + o*(-s) = e*c - o*s; odd: o*c + e*s = e*s + o*c (the same roundings)
            head *= self._rope_cos2[start]
            head += swapped * self._rope_sin2[start]
            return
        cos = cos_table[start : start + tokens, None, :]
        sin = sin_table[start : start + tokens, None, :]
        pairs = x[..., :rot].reshape(x.shape[0], x.shape[1], rot // 2, 2)
        even = pairs[..., 0].copy()
        odd = pairs[..., 1].copy()
        pairs[..., 0] = even * cos - odd * sin
        pairs[..., 1] = even * sin + odd * cos
        if not np.shares_memory(pairs, x):  # reshape copied (non-contiguous input): write back
            x[..., :rot] = pairs.reshape(x.shape[0], x.shape[1], rot)

    # -- forward ----------------------------------------------------------------------------

    def _attention(self, layer: int, h: np.ndarray, cache: KVCache, start: int) -> np.ndarray:
        cfg = self.config
        tokens = h.shape[0]
        kv_heads, group, head_dim = cfg.n_kv_heads, cfg.group_size, cfg.head_dim

        qkv = self._qkv[layer](h)  # (tokens, q_dim + 2 kv_dim)
        qk = qkv[:, : self._q_dim + self._kv_dim].reshape(tokens, cfg.n_heads + kv_heads, head_dim)
        qk = np.ascontiguousarray(qk)
        self._apply_rope(qk, start)  # queries and keys rotate together
        q = qk[:, : cfg.n_heads]
        k = qk[:, cfg.n_heads :]
        v = qkv[:, self._q_dim + self._kv_dim :].reshape(tokens, kv_heads, head_dim)

        stop = start + tokens
        cache.keys[layer, :, start:stop] = k.transpose(1, 0, 2)
        cache.values[layer, :, start:stop] = v.transpose(1, 0, 2)
        keys = cache.keys[layer, :, :stop]  # (kv_heads, keys, head_dim)
        values = cache.values[layer, :, :stop]

        # Query head h uses key/value head h // group: lay queries out as (kv_heads, group*tokens)
        # so that one batched matmul per key/value head computes every score.
        q = (q * self._scale).reshape(tokens, kv_heads, group, head_dim).transpose(1, 2, 0, 3)
        q = q.reshape(kv_heads, group * tokens, head_dim)
        scores = np.matmul(q, keys.transpose(0, 2, 1))  # (kv_heads, group*tokens, keys)
        if tokens > 1:  # causal mask: query i (position start+i) sees keys 0..start+i
            future = np.arange(stop)[None, :] > (start + np.arange(tokens))[:, None]
            scores.reshape(kv_heads, group, tokens, stop)[:, :, future] = -np.inf

        tic = time.perf_counter()
        probs = self.softmax(scores.reshape(cfg.n_heads, tokens, stop), layer)
        self.stats.softmax_seconds += time.perf_counter() - tic

        context = np.matmul(probs.reshape(kv_heads, group * tokens, stop), values)  # (kv, group*tokens, hd)
        context = context.reshape(kv_heads, group, tokens, head_dim).transpose(2, 0, 1, 3)
        return self._attn_out[layer](context.reshape(tokens, self._q_dim))

    def forward(self, tokens: Sequence[int] | np.ndarray, cache: KVCache, *, last_only: bool = False) -> np.ndarray:
        """Run ``tokens`` (appended after what ``cache`` holds) and return their logits.

        Returns float32 logits of shape ``(len(tokens), vocab)``, or ``(1, vocab)`` for the last
        token only with ``last_only=True`` (what decoding needs; skips most of the output head).
        """
        tic = time.perf_counter()
        cfg = self.config
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("forward() needs at least one token")
        if ids.min() < 0 or ids.max() >= self.weights.token_embedding.shape[0]:
            raise ValueError("token id out of the vocabulary's range")
        start = cache.length
        if start + ids.size > cache.max_tokens:
            raise ValueError(
                f"{start} cached + {ids.size} new tokens exceed the KV cache's {cache.max_tokens} positions"
            )

        x = self.weights.token_embedding[ids]  # (tokens, d_model), a fresh copy
        eps = cfg.rms_eps
        with np.errstate(over="ignore"):  # _silu's exp(-x) overflow is harmless (once, not per layer)
            for i, layer in enumerate(self.weights.layers):
                x += self._attention(i, _rms_norm(x, layer.attn_norm, eps), cache, start)
                gate_up = self._gate_up[i](_rms_norm(x, layer.ffn_norm, eps))
                gate, up = gate_up[:, : cfg.d_ff], gate_up[:, cfg.d_ff :]
                x += self._down[i](_silu(gate) * up)
        cache.length = start + ids.size

        if last_only:
            x = x[-1:]
        h = _rms_norm(x, self.weights.output_norm, eps)
        logits = h @ self.weights.output.T if self._output is None else self._output(h)
        self.stats.tokens += ids.size
        self.stats.forward_seconds += time.perf_counter() - tic
        return logits

    # -- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompt: Sequence[int],
        max_new: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int | None = None,
        stop_ids: Sequence[int] = (),
        use_cache: bool = True,
    ) -> Iterator[int]:
        """Yield up to ``max_new`` new token ids after ``prompt``.

        ``temperature=0`` is greedy decoding. With ``use_cache=False`` every step recomputes the
        whole sequence from scratch (slow; it exists to check the KV cache). Generation stops
        after yielding a token in ``stop_ids``.
        """
        if not prompt:
            raise ValueError("the prompt must contain at least one token")
        if max_new < 0:
            raise ValueError(f"max_new must be >= 0, got {max_new}")
        total = len(prompt) + max_new
        if total > self.config.context_length:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + {max_new} new tokens exceed the model's "
                f"context length of {self.config.context_length}"
            )
        rng = np.random.default_rng(seed)
        stop = set(stop_ids)
        sequence = list(prompt)
        cache = self.new_cache(total)
        pending = sequence
        for _ in range(max_new):
            if not use_cache:
                cache.reset()
                pending = sequence
            logits = self.forward(pending, cache, last_only=True)[0]
            token = _pick_token(logits, temperature, top_k, rng)
            yield token
            if token in stop:
                return
            sequence = sequence + [token]
            pending = [token]


def _pick_token(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    if 0 < top_k < scaled.size:
        cutoff = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled >= cutoff, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))
