"""Byte-level BPE tokenizer rebuilt from a GGUF's own vocabulary and merges.

The ``tokenizers`` library does the work; this module only assembles it the way llama.cpp reads
the same metadata: the BPE model from ``tokenizer.ggml.tokens`` / ``tokenizer.ggml.merges``, the
pre-tokenizer (how text is split before merging) chosen by ``tokenizer.ggml.pre``, and every token
the file marks CONTROL (type 3) registered as a special token so that e.g. ``<|im_start|>`` in a
chat prompt stays one token.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence

from .gguf_loader import TokenizerSpec, require_optional

__all__ = ["GGUFTokenizer"]

# llama.cpp token types (gguf.TokenType).
#: Bounds on rendering a GGUF's chat template (docs/errors.md): wall time and output size.
CHAT_TEMPLATE_SECONDS = 2.0
CHAT_TEMPLATE_MAX_CHARS = 1 << 20

_CONTROL = 3
_USER_DEFINED = 4

# Split expressions llama.cpp applies before byte-level BPE, by ``tokenizer.ggml.pre``. ``None``
# means the GPT-2 expression alone, which ``ByteLevel(use_regex=True)`` applies by itself.
_GPT2 = None
_DIGITS_THEN_GPT2 = r"\p{N}"  # StarCoder family: each digit alone, then the GPT-2 expression
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZER_SPLITS: dict[str, str | None] = {
    "default": _GPT2,
    "gpt-2": _GPT2,
    "phi-2": _GPT2,
    "smollm": _DIGITS_THEN_GPT2,
    "starcoder": _DIGITS_THEN_GPT2,
    "refact": _DIGITS_THEN_GPT2,
    "codeshell": _DIGITS_THEN_GPT2,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "smaug-bpe": _LLAMA3,
    "dbrx": _LLAMA3,
}


class GGUFTokenizer:
    """Encode/decode text with the vocabulary of a GGUF file.

    Parameters
    ----------
    spec:
        The ``tokenizer.*`` metadata read by :func:`~exaq_cpu.llama.gguf_loader.load_gguf`.
    """

    def __init__(self, spec: TokenizerSpec) -> None:
        tokenizers = require_optional("tokenizers", "")
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers

        if spec.model != "gpt2":
            raise ValueError(
                f"only byte-level BPE vocabularies (tokenizer.ggml.model = 'gpt2') are supported; "
                f"this file has {spec.model!r}"
            )
        vocab = {token: index for index, token in enumerate(spec.tokens)}
        merges = [tuple(merge.split(" ", 1)) for merge in spec.merges]
        backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))

        pre = spec.pre or "default"
        if pre not in _PRE_TOKENIZER_SPLITS:
            warnings.warn(
                f"unknown tokenizer.ggml.pre {pre!r}: splitting text with the GPT-2 expression",
                stacklevel=2,
            )
        split = _PRE_TOKENIZER_SPLITS.get(pre, _GPT2)
        if split is None:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        elif split == _DIGITS_THEN_GPT2:
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(split), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
                ]
            )
        else:
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(split), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        backend.decoder = decoders.ByteLevel()

        specials = [
            AddedToken(token, special=True, normalized=False)
            for token, kind in zip(spec.tokens, spec.token_types)
            if kind == _CONTROL
        ]
        if specials:
            backend.add_special_tokens(specials)
        user_defined = [
            AddedToken(token, special=False, normalized=False)
            for token, kind in zip(spec.tokens, spec.token_types)
            if kind == _USER_DEFINED
        ]
        if user_defined:
            backend.add_tokens(user_defined)

        self.backend = backend
        self.spec = spec
        self.bos_id = spec.bos_id
        self.eos_id = spec.eos_id
        self.vocab_size = len(spec.tokens)
        # Tokens that end a chat turn or the text: EOS plus the chat template's end-of-turn marker.
        self.stop_ids = {i for i in (spec.eos_id, vocab.get("<|im_end|>"), vocab.get("<|eot_id|>")) if i is not None}

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special-token strings in the text become their single token.

        ``add_bos=None`` follows the file's ``tokenizer.ggml.add_bos_token`` flag.
        """
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos is None:
            add_bos = self.spec.add_bos
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (bytes that do not form whole UTF-8 characters become U+FFFD)."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render ``messages`` with the GGUF's ``tokenizer.chat_template`` (Jinja2)."""
        template = self.spec.chat_template
        if not template:
            raise ValueError("this GGUF file has no tokenizer.chat_template; use a plain prompt instead of --chat")
        try:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("--chat renders the model's chat template with Jinja2: pip install jinja2") from exc

        def raise_exception(message: str):
            raise ValueError(f"chat template error: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        tokens = self.spec.tokens
        # The sandbox keeps a template away from Python internals but does not bound its work:
        # a template from a downloaded file may loop for ever or print gigabytes. Bound both:
        # a line tracer checks the clock inside the template's compiled code, and the output is
        # streamed and counted.
        deadline = time.monotonic() + CHAT_TEMPLATE_SECONDS

        def guard(frame, event, arg):
            if time.monotonic() > deadline:
                raise ValueError(f"chat template: rendering took longer than {CHAT_TEMPLATE_SECONDS} s (refused)")
            return guard

        try:
            compiled = env.from_string(template)
        except Exception as exc:  # jinja2.TemplateSyntaxError and friends
            raise ValueError(f"chat template does not parse: {exc}") from exc
        pieces, size = [], 0
        previous = sys.gettrace()
        sys.settrace(guard)
        try:
            for piece in compiled.generate(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=tokens[self.bos_id] if self.bos_id is not None else "",
                eos_token=tokens[self.eos_id] if self.eos_id is not None else "",
            ):
                size += len(piece)
                if size > CHAT_TEMPLATE_MAX_CHARS:
                    raise ValueError(f"chat template: output exceeds {CHAT_TEMPLATE_MAX_CHARS} characters (refused)")
                pieces.append(piece)
        finally:
            sys.settrace(previous)
        return "".join(pieces)
