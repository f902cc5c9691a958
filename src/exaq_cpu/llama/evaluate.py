"""Perplexity, KL divergence and top-1 agreement of a model variant against the float model.

The default evaluation text is CPython's own documentation, shipped with every Python as
``pydoc_data.topics.topics``: topics sorted by key and joined with blank lines. Nothing has to be
downloaded, so every user gets the same numbers for the same model and options (up to the
Python version's documentation).

The token stream is cut into non-overlapping windows of ``ctx`` tokens; each window is run from an
empty KV cache, and every position except the last predicts the next token.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TextIO

import numpy as np

from .model import LlamaModel

__all__ = [
    "BenchResult",
    "EvalResult",
    "Progress",
    "benchmark_decode",
    "calibrate",
    "default_eval_text",
    "eval_tokens",
    "evaluate",
    "windows",
]


def default_eval_text() -> str:
    """CPython's documentation topics (``pydoc_data.topics``), sorted by key, joined with blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def eval_tokens(tokenizer, count: int, text: str | None = None) -> list[int]:
    """The first ``count`` tokens of ``text`` (default: :func:`default_eval_text`), no BOS.

    Equal to tokenizing the whole text and cutting, but only a prefix is tokenized: pre-tokenization
    splits text locally, so only the last few tokens of a prefix can differ from the whole text's,
    and a prefix is used only when it yields a margin of extra tokens beyond ``count``.
    """
    if text is None:
        text = default_eval_text()
    margin = 64
    chars = max(1024, 8 * (count + margin))
    while chars < len(text):
        ids = tokenizer.encode(text[:chars], add_bos=False)
        if len(ids) >= count + margin:
            return ids[:count]
        chars *= 2
    return tokenizer.encode(text, add_bos=False)[:count]


def windows(token_ids: Sequence[int], ctx: int) -> list[np.ndarray]:
    """Non-overlapping windows of exactly ``ctx`` tokens (a shorter tail is dropped)."""
    if ctx < 2:
        raise ValueError(f"a window needs at least 2 tokens to predict anything, got ctx={ctx}")
    ids = np.asarray(token_ids, dtype=np.int64)
    count = len(ids) // ctx
    if count == 0:
        raise ValueError(f"{len(ids)} tokens do not fill one window of {ctx}")
    return [ids[i * ctx : (i + 1) * ctx] for i in range(count)]


class Progress:
    """Minimal progress bar on stderr; silent when stderr is not a terminal (or disabled)."""

    def __init__(self, total: int, label: str, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.label, self.done = total, label, 0
        self.start = time.perf_counter()
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.0f}s elapsed, {eta:4.0f}s left"
        )
        self.stream.flush()

    def update(self, steps: int = 1) -> None:
        self.done += steps
        self._draw()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class EvalResult:
    """Metrics of one evaluation run (the keys of ``eval --json``)."""

    perplexity: float
    kl: float  # mean KL(float || variant) over predicted positions, nats
    top1: float  # share of positions where the variant's argmax equals the float model's
    tokens_per_s: float  # tokens through the variant's forward pass per second of its wall time
    softmax_share: float  # share of the variant's forward time spent in the attention softmax
    tokens: int  # tokens evaluated (windows * ctx)
    predicted: int  # positions scored (windows * (ctx - 1))
    windows: int
    ctx: int

    def as_dict(self) -> dict:
        return asdict(self)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (KL of nearly equal distributions needs the precision)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def calibrate(
    model: LlamaModel, token_ids: Sequence[int], ctx: int, n_windows: int, *, progress: bool | None = None
) -> int:
    """Run ``n_windows`` windows through ``model`` only to feed its softmax calibrator.

    Returns the number of windows run (fewer if ``token_ids`` is short). Timing statistics of the
    calibration runs are discarded.
    """
    chunks = windows(token_ids, ctx)[:n_windows] if len(token_ids) >= ctx else []
    bar = Progress(len(chunks), "calibrate", progress)
    cache = model.new_cache(ctx)
    for chunk in chunks:
        cache.reset()
        model.forward(chunk, cache)
        bar.update()
    bar.close()
    model.stats.reset()
    return len(chunks)


def evaluate(
    variant: LlamaModel,
    token_ids: Sequence[int],
    ctx: int,
    reference: LlamaModel | None = None,
    *,
    progress: bool | None = None,
) -> EvalResult:
    """Evaluate ``variant`` on windows of ``token_ids`` against the float ``reference``.

    With ``reference=None`` the variant is its own reference (KL 0, top-1 1.0) — use that for
    the float model itself. Throughput and softmax share are measured on the variant only.
    """
    chunks = windows(token_ids, ctx)
    variant.stats.reset()
    cache = variant.new_cache(ctx)
    ref_cache = reference.new_cache(ctx) if reference is not None else None

    nll_sum = kl_sum = 0.0
    agree = predicted = 0
    bar = Progress(len(chunks), "eval", progress)
    for chunk in chunks:
        cache.reset()
        logp = _log_softmax(variant.forward(chunk, cache)[:-1])
        targets = chunk[1:]
        nll_sum -= float(logp[np.arange(len(targets)), targets].sum())
        if reference is None:
            agree += len(targets)
        else:
            ref_cache.reset()
            ref_logp = _log_softmax(reference.forward(chunk, ref_cache)[:-1])
            kl_sum += float((np.exp(ref_logp) * (ref_logp - logp)).sum())
            agree += int((ref_logp.argmax(axis=-1) == logp.argmax(axis=-1)).sum())
        predicted += len(targets)
        bar.update()
    bar.close()

    return EvalResult(
        perplexity=float(np.exp(nll_sum / predicted)),
        kl=kl_sum / predicted,
        top1=agree / predicted,
        tokens_per_s=variant.stats.tokens_per_s,
        softmax_share=variant.stats.softmax_share,
        tokens=len(chunks) * ctx,
        predicted=predicted,
        windows=len(chunks),
        ctx=ctx,
    )


@dataclass
class BenchResult:
    """Prefill and decode throughput of one model variant."""

    prompt_tokens: int
    new_tokens: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    decode_softmax_share: float

    def as_dict(self) -> dict:
        return asdict(self)


def benchmark_decode(model: LlamaModel, prompt: Sequence[int], new_tokens: int, *, warmup: int = 2) -> BenchResult:
    """Time a prefill of ``prompt`` then ``new_tokens`` greedy decode steps with the KV cache.

    ``warmup`` decode steps run first (and are not timed) so one-off costs — BLAS thread start-up,
    RoPE tables, lazy imports — stay out of the figures.
    """
    if new_tokens < 1:
        raise ValueError(f"need at least one decode step, got {new_tokens}")
    cache = model.new_cache(len(prompt) + warmup + new_tokens)
    logits = model.forward(prompt[: max(1, len(prompt) // 4)], cache)  # warm the prefill path
    cache.reset()
    model.stats.reset()
    logits = model.forward(prompt, cache, last_only=True)
    prefill = model.stats.tokens_per_s
    token = int(np.argmax(logits[0]))
    for _ in range(warmup):
        token = int(np.argmax(model.forward([token], cache, last_only=True)[0]))
    model.stats.reset()
    for _ in range(new_tokens):
        token = int(np.argmax(model.forward([token], cache, last_only=True)[0]))
    return BenchResult(
        prompt_tokens=len(prompt),
        new_tokens=new_tokens,
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=model.stats.tokens_per_s,
        decode_softmax_share=model.stats.softmax_share,
    )
