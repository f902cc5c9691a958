"""Validate the structure of a GGUF file before the ``gguf`` package reads it.

The ``gguf`` reader trusts every count and length in the file: an array that declares 2^62 entries
in a 4 KiB file makes it loop (and allocate) for ever, a tensor offset past the end gives a short
memory map that fails much later. This walk reads the header, the metadata (key/value) section and
the tensor descriptions with plain ``struct`` reads and checks every count, length, dimension,
offset and type code against the bytes that are actually left in the file (and against a few sane
limits) before anything is allocated or iterated. A bad file raises ``ValueError`` naming the field.

The walk allocates nothing proportional to a declared size: fixed-size arrays are skipped by
arithmetic after checking that they fit, and arrays of strings are walked one length at a time (each
length checked against what is left), so the time is bounded by the file size.
"""

from __future__ import annotations

import math
import mmap
import os
import struct

__all__ = ["GGUFLayout", "check_gguf", "SUPPORTED_TENSOR_TYPES"]

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_MAX_KEY_BYTES = 1 << 16  # a metadata key or tensor name longer than this is not a real file
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ALIGNMENT = 1 << 20
_MAX_NESTING = 2  # an array of arrays of scalars at most

# value type code -> (name, fixed byte size or None for strings / arrays)
_VALUE_TYPES = {
    0: ("UINT8", 1), 1: ("INT8", 1), 2: ("UINT16", 2), 3: ("INT16", 2), 4: ("UINT32", 4),
    5: ("INT32", 4), 6: ("FLOAT32", 4), 7: ("BOOL", 1), 8: ("STRING", None), 9: ("ARRAY", None),
    10: ("UINT64", 8), 11: ("INT64", 8), 12: ("FLOAT64", 8),
}
_STRING, _ARRAY, _UINT32 = 8, 9, 4

#: Tensor storage types the loader can dequantize: code -> (name, elements per block, bytes per block).
#: Codes and block layouts are GGML's (``ggml.h``); anything else in a file is refused up front
#: instead of failing inside the dequantizer.
SUPPORTED_TENSOR_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2),
}


class GGUFLayout:
    """What the walk found: version, metadata keys with their type codes, tensor descriptions."""

    def __init__(self, version: int, alignment: int, data_offset: int):
        self.version = version
        self.alignment = alignment
        self.data_offset = data_offset
        self.keys: dict[str, int] = {}
        #: name -> (dims as stored, innermost first; type code; offset relative to the data section)
        self.tensors: dict[str, tuple[tuple[int, ...], int, int]] = {}


class _Cursor:
    def __init__(self, buf, size: int, order: str):
        self.buf, self.size, self.pos, self.order = buf, size, 0, order

    def left(self) -> int:
        return self.size - self.pos

    def take(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        if n > self.left():
            raise ValueError(f"GGUF file is truncated: {what} needs {n} bytes at offset {self.pos}, "
                             f"{self.left()} left")
        value = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += n
        return value[0] if len(value) == 1 else value

    def skip(self, nbytes: int, what: str) -> None:
        if nbytes > self.left():
            raise ValueError(f"GGUF file is truncated: {what} declares {nbytes} bytes at offset "
                             f"{self.pos}, {self.left()} left")
        self.pos += nbytes

    def string(self, what: str, limit: int | None = None) -> int:
        """Skip one GGUF string (u64 length + bytes); return its start (of the bytes)."""
        length = self.take("Q", f"length of {what}")
        if limit is not None and length > limit:
            raise ValueError(f"GGUF {what} is {length} bytes long (limit {limit})")
        start = self.pos
        self.skip(length, what)
        return start

    def text(self, what: str) -> str:
        start = self.string(what, _MAX_KEY_BYTES)
        try:
            return bytes(self.buf[start:self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"GGUF {what} at offset {start} is not UTF-8") from None


def _skip_value(cur: _Cursor, code: int, key: str, depth: int = 0) -> None:
    kind = _VALUE_TYPES.get(code)
    if kind is None:
        raise ValueError(f"GGUF metadata key {key!r} has unknown value type {code}")
    size = kind[1]
    if size is not None:
        cur.skip(size, f"value of {key!r}")
    elif code == _STRING:
        cur.string(f"string value of {key!r}")
    else:
        if depth >= _MAX_NESTING:
            raise ValueError(f"GGUF metadata key {key!r} nests arrays deeper than {_MAX_NESTING}")
        item = cur.take("I", f"array type of {key!r}")
        count = cur.take("Q", f"array length of {key!r}")
        if item not in _VALUE_TYPES:
            raise ValueError(f"GGUF metadata key {key!r} is an array of unknown type {item}")
        item_size = _VALUE_TYPES[item][1]
        # every element takes at least one byte (strings and arrays: their 8-byte length)
        least = item_size if item_size is not None else 8
        if count * least > cur.left():
            raise ValueError(f"GGUF metadata key {key!r} declares {count} array entries of at least "
                             f"{least} bytes, but only {cur.left()} bytes are left in the file")
        if item_size is not None:
            cur.skip(count * item_size, f"array {key!r}")
        elif item == _STRING:
            take, buf, order, size = struct.unpack_from, cur.buf, cur.order + "Q", cur.size
            pos = cur.pos
            for _ in range(count):  # the bound above makes this loop at most file size / 8 long
                if pos + 8 > size:
                    raise ValueError(f"GGUF file is truncated inside the string array {key!r}")
                pos += 8 + take(order, buf, pos)[0]
                if pos > size:
                    raise ValueError(f"GGUF file is truncated inside the string array {key!r}")
            cur.pos = pos
        else:
            for _ in range(count):
                _skip_value(cur, item, key, depth + 1)


def _walk(buf, size: int) -> GGUFLayout:
    if size < 24 or bytes(buf[:4]) != _MAGIC:
        raise ValueError("not a GGUF file (no 'GGUF' magic)")
    version = struct.unpack_from("<I", buf, 4)[0]
    order = "<"
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        order = ">"
        version = struct.unpack_from(">I", buf, 4)[0]
    if version not in _VERSIONS:
        raise ValueError(f"GGUF version {version} is not supported (only {_VERSIONS})")
    cur = _Cursor(buf, size, order)
    cur.pos = 8
    n_tensors = cur.take("Q", "tensor count")
    n_kv = cur.take("Q", "metadata count")
    # a key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor description
    # at least 8 (name length) + 4 (dims) + 8 (one dim) + 4 (type) + 8 (offset)
    if n_kv * 13 > cur.left():
        raise ValueError(f"GGUF metadata count {n_kv} cannot fit in a {size}-byte file")
    if n_tensors * 32 > cur.left():
        raise ValueError(f"GGUF tensor count {n_tensors} cannot fit in a {size}-byte file")

    keys: dict[str, int] = {}
    alignment = 32
    for _ in range(n_kv):
        key = cur.text("metadata key")
        if key in keys:
            raise ValueError(f"GGUF metadata key {key!r} appears twice")
        code = cur.take("I", f"value type of {key!r}")
        keys[key] = code
        if key == "general.alignment":
            if code != _UINT32:
                raise ValueError(f"GGUF general.alignment must be UINT32, not type {code}")
            alignment = cur.take("I", "general.alignment")
            if not 0 < alignment <= _MAX_ALIGNMENT or alignment & (alignment - 1):
                raise ValueError(f"GGUF general.alignment {alignment} is not a power of two up to {_MAX_ALIGNMENT}")
            continue
        _skip_value(cur, code, key)

    tensors: dict[str, tuple[tuple[int, ...], int, int]] = {}
    for _ in range(n_tensors):
        name = cur.text("tensor name")
        if name in tensors:
            raise ValueError(f"GGUF tensor {name!r} appears twice")
        n_dims = cur.take("I", f"dimension count of tensor {name!r}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise ValueError(f"GGUF tensor {name!r} has {n_dims} dimensions (1 to {_MAX_DIMS} allowed)")
        dims = tuple(cur.take("Q", f"dimension of tensor {name!r}") for _ in range(n_dims))
        code = cur.take("I", f"type of tensor {name!r}")
        offset = cur.take("Q", f"data offset of tensor {name!r}")
        if code not in SUPPORTED_TENSOR_TYPES:
            raise ValueError(f"GGUF tensor {name!r} has type code {code}, which this loader does not read "
                             f"(supported: {', '.join(t[0] for t in SUPPORTED_TENSOR_TYPES.values())})")
        if min(dims) < 1:
            raise ValueError(f"GGUF tensor {name!r} has an empty dimension: {list(dims)}")
        tensors[name] = (dims, code, offset)

    data_offset = -(-cur.pos // alignment) * alignment
    data_size = size - data_offset
    for name, (dims, code, offset) in tensors.items():
        type_name, block, block_bytes = SUPPORTED_TENSOR_TYPES[code]
        if dims[0] % block:
            raise ValueError(f"GGUF tensor {name!r} ({type_name}): first dimension {dims[0]} is not a "
                             f"multiple of the block size {block}")
        n_bytes = math.prod(dims) // block * block_bytes  # Python ints: no overflow
        if offset % alignment:
            raise ValueError(f"GGUF tensor {name!r}: data offset {offset} is not aligned to {alignment}")
        if offset > data_size or n_bytes > data_size - offset:
            raise ValueError(f"GGUF tensor {name!r}: {n_bytes} bytes at data offset {offset} run past the "
                             f"end of the file ({max(data_size, 0)} bytes of tensor data)")
    # Tensors may not share bytes: with aliasing, a small file could name the same megabytes a
    # thousand times and make the dequantized model thousands of times its size.
    spans = sorted((offset, math.prod(dims) // SUPPORTED_TENSOR_TYPES[code][1] * SUPPORTED_TENSOR_TYPES[code][2], name)
                   for name, (dims, code, offset) in tensors.items())
    for (a_off, a_len, a_name), (b_off, _, b_name) in zip(spans, spans[1:]):
        if a_off + a_len > b_off:
            raise ValueError(f"GGUF tensors {a_name!r} and {b_name!r} overlap in the data section")
    layout = GGUFLayout(version, alignment, data_offset)
    layout.keys, layout.tensors = keys, tensors
    return layout


def check_gguf(path: str | os.PathLike) -> GGUFLayout:
    """Walk the GGUF file at ``path``; ``ValueError`` (naming the field) if its structure is invalid."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ValueError(f"{os.fspath(path)} is empty, not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _walk(buf, size)
            except struct.error as exc:  # pragma: no cover - every read is bounds-checked first
                raise ValueError(f"GGUF file is malformed: {exc}") from None
