"""Read ``.npz`` artefacts from untrusted sources with bounded work and memory.

``np.load`` trusts each member: it allocates whatever the member's ``.npy`` header declares and
inflates compressed members in full. Here every member is opened on demand (members a loader does
not ask for are never read), its ``.npy`` header is parsed and checked against what the caller
expects (dtype, shape or dimension count, at most a byte budget) and against the sizes the zip
directory declares, and only then are exactly the declared bytes read, in bounded chunks. A
deflated member may inflate to at most ``MAX_INFLATION`` times its compressed size (the savers
write stored, uncompressed members; real codes and tables compress far less), so what a file can
make us allocate is bounded by a fixed multiple of its size: a small file never costs gigabytes. Everything wrong is a ``ValueError`` naming the
member; object (pickled) arrays are refused outright.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["MAX_INFLATION", "NpzReader"]

#: Largest accepted ratio of a compressed member's data to its compressed size. Deflate itself
#: reaches ~1032:1 on constant data; a bomb is exactly that, real artefacts stay far below.
MAX_INFLATION = 100
_HEADER_SLACK = 1 << 16
_CHUNK = 1 << 20


class NpzReader:
    """``with NpzReader(file, "a saved BCQMatrix") as z: z.array("planes", np.uint8, ndim=1)``."""

    def __init__(self, file, what: str):
        self.what = what
        if isinstance(file, (str, os.PathLike)):
            file = os.fspath(file)
        try:
            self._zip = zipfile.ZipFile(file)
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, struct.error,
                UnicodeDecodeError) as err:
            # NotImplementedError: a directory entry claiming a newer zip version (found by fuzzing)
            raise ValueError(f"not {what}: {err}") from None
        self._members = {}
        for info in self._zip.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._members.setdefault(name, info)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._zip.close()

    def has(self, name: str) -> bool:
        return name in self._members

    def array(self, name: str, dtype=None, *, kinds: str | None = None, shape=None, ndim=None,
              max_bytes: int | None = None) -> np.ndarray:
        """Member ``name`` after its header matched: exact ``dtype`` (or a dtype kind in ``kinds``),
        exact ``shape`` (or ``ndim``), at most ``max_bytes`` of data."""
        info = self._members.get(name)
        if info is None:
            raise ValueError(f"not {self.what}: member {name!r} is missing")
        try:
            with self._zip.open(info) as member:
                dt, shp, fortran, header_len = self._header(member, name)
                if dt.hasobject:
                    raise ValueError(f"{self.what}: member {name!r} holds Python objects (refused)")
                if dtype is not None and dt != np.dtype(dtype):
                    raise ValueError(f"{self.what}: member {name!r} has dtype {dt}, expected {np.dtype(dtype)}")
                if kinds is not None and dt.kind not in kinds:
                    raise ValueError(f"{self.what}: member {name!r} has dtype {dt}, not one of kinds {kinds!r}")
                if shape is not None and shp != tuple(shape):
                    raise ValueError(f"{self.what}: member {name!r} has shape {shp}, expected {tuple(shape)}")
                if ndim is not None and len(shp) != ndim:
                    raise ValueError(f"{self.what}: member {name!r} has {len(shp)} dimensions, expected {ndim}")
                nbytes = math.prod(shp) * dt.itemsize
                if max_bytes is not None and nbytes > max_bytes:
                    raise ValueError(f"{self.what}: member {name!r} declares {nbytes} bytes, more than "
                                     f"the {max_bytes} its other fields allow")
                if info.file_size != header_len + nbytes:
                    raise ValueError(f"{self.what}: member {name!r} is {info.file_size} bytes in the archive "
                                     f"but its header implies {header_len + nbytes}")
                if info.compress_type != zipfile.ZIP_STORED and \
                        nbytes > MAX_INFLATION * info.compress_size + _HEADER_SLACK:
                    raise ValueError(f"{self.what}: member {name!r} claims {nbytes} bytes from "
                                     f"{info.compress_size} compressed bytes (over {MAX_INFLATION}:1, refused as a "
                                     "possible decompression bomb)")
                data = bytearray(nbytes)
                view, got = memoryview(data), 0
                while got < nbytes:
                    n = member.readinto(view[got:got + _CHUNK])
                    if not n:
                        raise ValueError(f"{self.what}: member {name!r} is truncated")
                    got += n
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as err:
            # RuntimeError: encrypted members; NotImplementedError: unknown compression methods
            raise ValueError(f"{self.what}: member {name!r} is corrupt: {err}") from None
        array = np.frombuffer(data, dtype=dt)
        return array.reshape(shp, order="F" if fortran else "C")

    def scalar_int(self, name: str, low: int, high: int) -> int:
        """A 0-d integer member in ``[low, high]`` (a float such as 2.7 is refused, not truncated)."""
        value = self.array(name, kinds="iub", shape=(), max_bytes=8)
        if value.dtype.kind == "b" or not low <= int(value) <= high:
            raise ValueError(f"{self.what}: field {name!r} is {value.item()!r}, not an integer in [{low}, {high}]")
        return int(value)

    def text(self, name: str, max_chars: int = 256) -> str:
        value = self.array(name, kinds="U", shape=(), max_bytes=4 * max_chars)
        return str(value)

    def _header(self, member, name):
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shp, fortran, dt = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shp, fortran, dt = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as err:
            raise ValueError(f"{self.what}: member {name!r} has no valid .npy header: {err}") from None
        except Exception as err:  # header parser: SyntaxError, TypeError on crafted dicts
            raise ValueError(f"{self.what}: member {name!r} has no valid .npy header: {err}") from None
        return np.dtype(dt), tuple(int(s) for s in shp), bool(fortran), member.tell()

