"""Hostile GGUF files: every structural lie or bad hyper-parameter is a fast ``ValueError``."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("gguf")

import gguf_craft as gc  # noqa: E402

from exaq_cpu.llama import LlamaModel  # noqa: E402
from exaq_cpu.llama.gguf_loader import load_gguf  # noqa: E402


def _write(tmp_path, data: bytes, name: str = "m.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_crafted_file_is_valid(tmp_path):
    """The builder's baseline file loads and runs, so every failure below is the injected fault."""
    contents = load_gguf(_write(tmp_path, gc.tiny_llama()))
    assert contents.config.n_heads == 2 and contents.tokenizer.tokens[5] == "ab"
    model = LlamaModel.from_gguf(str(tmp_path / "m.gguf"))
    logits = model.forward([0, 1, 2], model.new_cache(8))
    assert logits.shape == (3, 6) and np.isfinite(logits).all()


def test_huge_array_is_refused_fast(tmp_path):
    """A 4 KiB file declaring a 2^62-entry array: the gguf reader alone loops and grows for ever.

    Run in a child process with a timeout so a regression fails instead of hanging the suite.
    """
    kvs = [("general.architecture", gc.STRING, "llama"),
           ("evil", gc.ARRAY, struct.pack("<IQ", gc.U8, 1 << 62))]
    data = gc.build(kvs, [])
    data += b"\0" * (4096 - len(data))
    path = _write(tmp_path, data)
    code = textwrap.dedent(f"""
        import time
        from exaq_cpu.llama.gguf_loader import load_gguf
        t = time.perf_counter()
        try:
            load_gguf({str(path)!r})
        except ValueError as exc:
            print("ValueError", time.perf_counter() - t, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("ValueError"), out.stdout + out.stderr
    assert "'evil'" in out.stdout
    assert float(out.stdout.split()[1]) < 0.5


@pytest.mark.parametrize("item", [gc.U8, gc.U64, gc.STRING, gc.ARRAY])
def test_array_counts_checked_against_file_size(tmp_path, item):
    kvs = [("general.architecture", gc.STRING, "llama"), ("x", gc.ARRAY, struct.pack("<IQ", item, 10**6))]
    t = time.perf_counter()
    with pytest.raises(ValueError, match="'x'"):
        load_gguf(_write(tmp_path, gc.build(kvs, [])))
    assert time.perf_counter() - t < 0.5


@pytest.mark.parametrize("counts", [(1 << 60, 0), (0, 1 << 60), (2**64 - 1, 2**64 - 1)])
def test_header_counts_checked(tmp_path, counts):
    with pytest.raises(ValueError, match="count"):
        load_gguf(_write(tmp_path, gc.build([], [], counts=counts)))


def test_huge_string_length(tmp_path):
    kvs = [("general.architecture", gc.STRING, struct.pack("<Q", 1 << 62) + b"llama")]
    with pytest.raises(ValueError, match="truncated"):
        load_gguf(_write(tmp_path, gc.build(kvs, [])))


def test_every_truncation_is_a_value_error(tmp_path):
    data = gc.tiny_llama()
    cuts = sorted({*range(0, 64), *range(64, len(data), 97), len(data) - 1})
    for cut in cuts:
        path = _write(tmp_path, data[:cut])
        with pytest.raises(ValueError):
            load_gguf(path)


def _with_tensor(field: int, value, name: str = "blk.0.attn_q.weight"):
    kvs, tensors = gc.tiny_llama_parts()
    for t in tensors:
        if t[0] == name:
            t[field] = value
    return gc.build(kvs, tensors)


def test_tensor_offset_past_end(tmp_path):
    kvs, tensors = gc.tiny_llama_parts()
    data = gc.build(kvs, tensors)
    # the last tensor placed one alignment step further than the data
    tensors[-1][3] = len(data)
    with pytest.raises(ValueError, match="ffn_down.*past the end"):
        load_gguf(_write(tmp_path, gc.build(kvs, tensors)))


def test_tensor_offset_misaligned(tmp_path):
    with pytest.raises(ValueError, match="aligned"):
        load_gguf(_write(tmp_path, _with_tensor(3, 4)))


@pytest.mark.parametrize("dims", [(8, 1 << 40), (2**64 - 1,), (8, 8, 1, 1, 1), (8, 0)])
def test_tensor_dims_lie(tmp_path, dims):
    with pytest.raises(ValueError, match="attn_q"):
        load_gguf(_write(tmp_path, _with_tensor(1, dims)))


@pytest.mark.parametrize("kind", [24, 99, 2**32 - 1])  # I8 (no dequantizer), unknown codes
def test_unknown_tensor_type(tmp_path, kind):
    with pytest.raises(ValueError, match="type code"):
        load_gguf(_write(tmp_path, _with_tensor(2, kind)))


def test_tensor_shape_disagrees_with_metadata(tmp_path):
    # the same number of values, transposed: the reader is happy, the model would not be
    path = _write(tmp_path, _with_tensor(1, (4, 16), name="blk.0.ffn_gate.weight"))
    with pytest.raises(ValueError, match="ffn_gate.*shape"):
        LlamaModel.from_gguf(str(path))


@pytest.mark.parametrize(
    "key, value",
    [
        ("llama.attention.head_count", (gc.U32, 0)),
        ("llama.attention.head_count_kv", (gc.U32, 0)),
        ("llama.attention.head_count", (gc.U32, 3)),  # 8 is not a multiple of 3
        ("llama.embedding_length", (gc.I32, -8)),
        ("llama.block_count", (gc.STRING, "one")),
        ("llama.rope.freq_base", (gc.F32, float("nan"))),
        ("llama.rope.freq_base", (gc.F32, -10000.0)),
        ("llama.rope.freq_base", (gc.F32, float("inf"))),
        ("llama.attention.layer_norm_rms_epsilon", (gc.F32, -1e-5)),
        ("llama.attention.layer_norm_rms_epsilon", (gc.F32, float("nan"))),
        ("llama.rope.dimension_count", (gc.U32, 5)),
        ("llama.rope.dimension_count", (gc.U32, 64)),
        ("llama.context_length", (gc.U32, 0)),
        ("tokenizer.ggml.bos_token_id", (gc.U32, 6)),
        ("tokenizer.ggml.tokens", (gc.ARRAY, (gc.STRING, ["t"] * 7))),
        ("tokenizer.ggml.token_type", (gc.ARRAY, (gc.I32, [1]))),
        ("general.alignment", (gc.U32, 3)),
    ],
)
def test_bad_hyper_parameters(tmp_path, key, value):
    path = _write(tmp_path, gc.tiny_llama(**{key: value}))
    with pytest.raises(ValueError, match=key.split(".")[-1]):
        LlamaModel.from_gguf(str(path))


def test_duplicate_key_and_nested_arrays(tmp_path):
    kvs = [("general.architecture", gc.STRING, "llama"), ("general.architecture", gc.STRING, "llama")]
    with pytest.raises(ValueError, match="twice"):
        load_gguf(_write(tmp_path, gc.build(kvs, [])))
    deep = struct.pack("<IQ", gc.ARRAY, 1) + struct.pack("<IQ", gc.ARRAY, 1) + struct.pack("<IQ", gc.U8, 0)
    with pytest.raises(ValueError, match="nests"):
        load_gguf(_write(tmp_path, gc.build([("deep", gc.ARRAY, deep)], [])))


def test_bad_value_type_code(tmp_path):
    with pytest.raises(ValueError, match="unknown value type"):
        load_gguf(_write(tmp_path, gc.build([("k", 13, b"\0" * 8)], [])))


def _tokenizer_with_template(template):
    pytest.importorskip("tokenizers")
    pytest.importorskip("jinja2")
    from exaq_cpu.llama.gguf_loader import TokenizerSpec
    from exaq_cpu.llama.tokenizer import GGUFTokenizer

    spec = TokenizerSpec(model="gpt2", pre=None, tokens=["<s>", "a", "b"], token_types=[3, 1, 1],
                         merges=[], bos_id=0, eos_id=0, add_bos=False, chat_template=template)
    return GGUFTokenizer(spec)


@pytest.mark.parametrize("template, message", [
    # 10^10 empty iterations: no output at all, only the clock can stop it
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
    ("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", "exceeds"),
    ("{% for %}", "parse"),
])
def test_hostile_chat_templates(monkeypatch, template, message):
    from exaq_cpu.llama import tokenizer as tk

    monkeypatch.setattr(tk, "CHAT_TEMPLATE_SECONDS", 0.3)
    tok = _tokenizer_with_template(template)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert time.perf_counter() - t < 5


def test_ordinary_chat_template_still_renders():
    tok = _tokenizer_with_template("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                                   "{% if add_generation_prompt %}<assistant>{% endif %}{{ eos_token }}")
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<user>hi<assistant><s>"


def test_tensors_may_not_alias(tmp_path):
    """Many tensors naming the same bytes would multiply the dequantized size of a small file."""
    kvs, tensors = gc.tiny_llama_parts()
    # point ffn_up at ffn_gate's bytes (same shape and type): the reader would happily load both
    gate = next(t for t in tensors if t[0] == "blk.0.ffn_gate.weight")
    up = next(t for t in tensors if t[0] == "blk.0.ffn_up.weight")
    offsets, pos = {}, 0
    for t in tensors:
        pos += -pos % 32
        offsets[t[0]] = pos
        pos += len(t[4])
    up[3] = offsets[gate[0]]
    with pytest.raises(ValueError, match="overlap"):
        load_gguf(_write(tmp_path, gc.build(kvs, tensors)))
