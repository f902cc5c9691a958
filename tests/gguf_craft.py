"""Write GGUF files byte by byte, including broken ones, for the loader's hardening tests.

The ``gguf`` package's writer refuses (or fixes) most of the mistakes a hostile file makes, so the
tests build the bytes themselves: header, key/value metadata, tensor descriptions, aligned data.
"""

from __future__ import annotations

import struct

import numpy as np

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_SCALAR_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?",
               U64: "Q", I64: "q", F64: "d"}
T_F32 = 0


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def value_bytes(kind: int, value) -> bytes:
    if kind == STRING:
        return gguf_string(value)
    if kind == ARRAY:
        item, items = value
        return struct.pack("<IQ", item, len(items)) + b"".join(value_bytes(item, v) for v in items)
    return struct.pack("<" + _SCALAR_FMT[kind], value)


def build(kvs, tensors, *, version: int = 3, alignment: int = 32, counts=None) -> bytes:
    """``kvs``: (key, type, value or raw bytes); ``tensors``: (name, dims, type, offset, data bytes).

    ``offset=None`` places the tensor after the previous one (aligned). ``counts`` overrides the
    header's (tensor count, metadata count).
    """
    body = b""
    for key, kind, value in kvs:
        payload = value if isinstance(value, bytes) else value_bytes(kind, value)  # bytes: raw payload
        body += gguf_string(key) + struct.pack("<I", kind) + payload
    data = b""
    for name, dims, kind, offset, blob in tensors:
        if offset is None:
            data += b"\0" * (-len(data) % alignment)
            offset = len(data)
            data += blob
        body += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        body += struct.pack("<IQ", kind, offset)
    n_tensors, n_kv = counts if counts is not None else (len(tensors), len(kvs))
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body
    head += b"\0" * (-len(head) % alignment)
    return head + data


def tiny_llama_parts(seed: int = 0, **overrides):
    """(kvs, tensors) of a valid one-layer llama with F32 tensors and a 6-token vocabulary.

    ``overrides`` replaces metadata values by key (``None`` drops the key).
    """
    rng = np.random.default_rng(seed)
    d, heads, kv_heads, ff = 8, 2, 1, 16
    head_dim = d // heads
    tokens = ["<s>", "a", "b", "c", "Ġ", "ab"]
    kvs = {
        "general.architecture": (STRING, "llama"),
        "general.name": (STRING, "tiny"),
        "llama.block_count": (U32, 1),
        "llama.context_length": (U32, 32),
        "llama.embedding_length": (U32, d),
        "llama.feed_forward_length": (U32, ff),
        "llama.attention.head_count": (U32, heads),
        "llama.attention.head_count_kv": (U32, kv_heads),
        "llama.rope.freq_base": (F32, 10000.0),
        "llama.attention.layer_norm_rms_epsilon": (F32, 1e-5),
        "llama.vocab_size": (U32, len(tokens)),
        "tokenizer.ggml.model": (STRING, "gpt2"),
        "tokenizer.ggml.tokens": (ARRAY, (STRING, tokens)),
        "tokenizer.ggml.token_type": (ARRAY, (I32, [3, 1, 1, 1, 1, 1])),
        "tokenizer.ggml.merges": (ARRAY, (STRING, ["a b"])),
        "tokenizer.ggml.bos_token_id": (U32, 0),
        "tokenizer.ggml.eos_token_id": (U32, 0),
    }
    for key, value in overrides.items():
        if value is None:
            kvs.pop(key, None)
        else:
            kvs[key] = value
    kv_list = [(k, kind, v) for k, (kind, v) in kvs.items()]

    def f32(*shape):  # GGUF stores dims innermost first
        array = rng.standard_normal(shape).astype("<f4")
        return (name_dims(shape), array.tobytes())

    def name_dims(shape):
        return tuple(reversed(shape))

    specs = {
        "token_embd.weight": (len(tokens), d),
        "output_norm.weight": (d,),
        "blk.0.attn_norm.weight": (d,),
        "blk.0.ffn_norm.weight": (d,),
        "blk.0.attn_q.weight": (heads * head_dim, d),
        "blk.0.attn_k.weight": (kv_heads * head_dim, d),
        "blk.0.attn_v.weight": (kv_heads * head_dim, d),
        "blk.0.attn_output.weight": (d, heads * head_dim),
        "blk.0.ffn_gate.weight": (ff, d),
        "blk.0.ffn_up.weight": (ff, d),
        "blk.0.ffn_down.weight": (d, ff),
    }
    tensors = []
    for name, shape in specs.items():
        dims, blob = f32(*shape)
        tensors.append([name, dims, T_F32, None, blob])
    return kv_list, tensors


def tiny_llama(seed: int = 0, **overrides) -> bytes:
    kvs, tensors = tiny_llama_parts(seed, **overrides)
    return build(kvs, tensors)
