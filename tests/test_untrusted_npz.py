"""Hostile ``.npz`` artefacts for ``PackedSoftmax.load`` and ``BCQMatrix.load``."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

import exaq_cpu
from exaq_cpu.lutgemm import BCQMatrix
from exaq_cpu.lutgemm import quantize_weights as quantize
from exaq_cpu.packed import PackedSoftmax


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _zip(members: dict, compress=zipfile.ZIP_STORED) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for name, value in members.items():
            z.writestr(name + ".npy", value if isinstance(value, bytes) else _npy(value))
    buf.seek(0)
    return buf


def _members(artefact):
    """An artefact saved to memory, and the arrays its .npz holds, by name."""
    buf = io.BytesIO()
    artefact.save(buf)
    buf.seek(0)
    with np.load(buf) as f:
        return artefact, {k: f[k] for k in f.files}


def _packed_members():
    x = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    return _members(exaq_cpu.softmax(x, bits=2, output="packed"))


def _bcq_members():
    w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    return _members(quantize(w, bits=2, group_size=32))


def test_roundtrips_still_work():
    p, members = _packed_members()
    q = PackedSoftmax.load(_zip(members))
    assert np.array_equal(q.to_float(), p.to_float())
    m, members = _bcq_members()
    n = BCQMatrix.load(_zip(members))
    assert np.array_equal(n.dequantize(), m.dequantize())


@pytest.mark.parametrize("missing", ["bits", "codes", "table", "lengths", "shape", "has_mask"])
def test_packed_missing_member(missing):
    _, members = _packed_members()
    del members[missing]
    with pytest.raises(ValueError, match=missing):
        PackedSoftmax.load(_zip(members))


@pytest.mark.parametrize("missing", ["format", "planes", "alphas", "offsets", "shape", "bits", "group_size"])
def test_bcq_missing_member(missing):
    _, members = _bcq_members()
    del members[missing]
    with pytest.raises(ValueError, match=missing):
        BCQMatrix.load(_zip(members))


@pytest.mark.parametrize("field, value", [("bits", np.float64(2.7)), ("bits", np.int64(5)),
                                          ("axis", np.float64(1.0)), ("axis", np.int64(7)),
                                          ("bits", np.array([2, 2]))])
def test_packed_values_that_do_not_fit(field, value):
    _, members = _packed_members()
    members[field] = value
    with pytest.raises(ValueError, match=field):
        PackedSoftmax.load(_zip(members))


@pytest.mark.parametrize("field, value", [("bits", np.float64(2.7)), ("bits", np.int64(9)),
                                          ("group_size", np.float64(32.5)),
                                          ("planes", None)])
def test_bcq_values_that_do_not_fit(field, value):
    m, members = _bcq_members()
    if field == "planes":  # the right count of values, but 300 does not fit a byte
        value = members["planes"].astype(np.int16)
        value[0] = 300
    members[field] = value
    with pytest.raises(ValueError, match=field):
        BCQMatrix.load(_zip(members))
    if field == "planes":  # the constructor refuses it too instead of wrapping to 44
        with pytest.raises(ValueError, match="planes"):
            BCQMatrix(value, m.alphas, m.offsets, m.shape, m.bits, m.group_size)


def test_object_arrays_refused():
    _, members = _packed_members()
    members["codes"] = np.array([object()], dtype=object)
    with pytest.raises(ValueError, match="codes"):
        PackedSoftmax.load(_zip(members))


def test_header_must_match_fields():
    _, members = _packed_members()
    members["codes"] = members["codes"][:, :-1]
    with pytest.raises(ValueError, match="codes"):
        PackedSoftmax.load(_zip(members))
    _, members = _bcq_members()
    members["alphas"] = members["alphas"].astype(np.float64)
    with pytest.raises(ValueError, match="alphas"):
        BCQMatrix.load(_zip(members))


def test_unused_members_are_not_read():
    """Without a mask, a corrupt 'mask' member (and an unknown extra one) are never touched."""
    p, members = _packed_members()
    members["mask"] = b"garbage, not an npy file"
    members["extra"] = b"\x93NUMPY garbage"
    q = PackedSoftmax.load(_zip(members))
    assert np.array_equal(q.to_float(), p.to_float())


def test_decompression_bomb_refused_without_allocating():
    """64 MiB of zero codes deflated to ~64 KiB, consistent with the other fields."""
    rows, n = 4096, 65536
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, value in {"format_version": np.int64(1), "bits": np.int64(2), "axis": np.int64(1),
                            "shape": np.array([rows, n], np.int64), "has_mask": np.bool_(False),
                            "table": np.zeros((rows, 4), np.float32),
                            "lengths": np.full(rows, n, np.int64),
                            "mask": np.zeros(0, np.uint8)}.items():
            z.writestr(name + ".npy", _npy(value))
        with z.open("codes.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "|u1", "fortran_order": False, "shape": (rows, n // 4)})
            member.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(rows * (n // 4) >> 20):
                member.write(chunk)
    assert len(buf.getvalue()) < 1 << 20
    buf.seek(0)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="codes"):
            PackedSoftmax.load(buf)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_not_a_zip():
    with pytest.raises(ValueError):
        PackedSoftmax.load(io.BytesIO(b"PK\x03\x04 not really"))
    with pytest.raises(ValueError):
        BCQMatrix.load(io.BytesIO(b""))
