"""Fuzz targets for every loader of untrusted input (Hypothesis).

Each target starts from a valid artefact, applies random edits (byte overwrites, "interesting"
integers written over counts and lengths, truncation, inserted bytes) and requires the loader to
either succeed or raise ``ValueError`` -- nothing else, within a time bound per example.

Examples per target: ``EXAQ_FUZZ_EXAMPLES`` (default 40, so the ordinary suite stays quick).
``.ci/run`` runs 300 per target (under a minute). A long run, e.g. overnight::

    EXAQ_FUZZ_EXAMPLES=200000 python -m pytest -q tests/test_fuzz_loaders.py -p no:randomly

Hypothesis keeps failing examples in ``.hypothesis/`` and replays them first.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exaq_cpu
from exaq_cpu.clipping import Calibrator
from exaq_cpu.lutgemm import BCQMatrix
from exaq_cpu.lutgemm import quantize_weights as quantize
from exaq_cpu.packed import PackedSoftmax

EXAMPLES = int(os.environ.get("EXAQ_FUZZ_EXAMPLES", "40"))
SECONDS = 5.0  # per example; a loader that hangs fails instead of stalling the run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INTERESTING = [0, 1, 2, 3, 7, 8, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1]


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so no loader's ``except Exception`` can swallow it."""


def _bounded(call):
    def alarm(signum, frame):
        raise _Hang(f"loader ran longer than {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _must_be_value_error_or_succeed(call):
    try:
        _bounded(call)
    except ValueError:
        pass


edit = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("u64"), st.integers(0, 1 << 20), st.sampled_from(INTERESTING)),
    st.tuples(st.just("u32"), st.integers(0, 1 << 20), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(b"")),
)


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        pos %= len(buf)
        if kind == "byte":
            buf[pos:pos + len(value)] = value
        elif kind == "u64":
            buf[pos:pos + 8] = struct.pack("<Q", value % 2**64)
        elif kind == "u32":
            buf[pos:pos + 4] = struct.pack("<I", value % 2**32)
        elif kind == "insert":
            buf[pos:pos] = value
        else:
            del buf[pos:]
    return bytes(buf)


# --- GGUF ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes():
    pytest.importorskip("gguf")
    import gguf_craft

    return gguf_craft.tiny_llama()


@FUZZ
@given(edits=st.lists(edit, min_size=1, max_size=4))
def test_fuzz_gguf(gguf_bytes, tmp_path_factory, edits):
    from exaq_cpu.llama import LlamaModel

    path = tmp_path_factory.mktemp("fuzz") / "m.gguf"
    path.write_bytes(_mutate(gguf_bytes, edits))

    def load_and_step():
        model = LlamaModel.from_gguf(str(path))
        logits = model.forward([0, 1], model.new_cache(4))
        assert logits.shape[0] == 2

    _must_be_value_error_or_succeed(load_and_step)


# --- .npz artefacts -----------------------------------------------------------------------


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    obj.save(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def npz_bytes():
    x = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    x[1, 30:] = -np.inf
    packed = exaq_cpu.softmax(x, bits=3, output="packed")
    bcq = quantize(np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32), 2, 32)
    return {"packed": _saved(packed), "bcq": _saved(bcq)}


@FUZZ
@given(which=st.sampled_from(["packed", "bcq"]), edits=st.lists(edit, min_size=1, max_size=4))
def test_fuzz_npz_bytes(npz_bytes, which, edits):
    data = _mutate(npz_bytes[which], edits)
    loader = PackedSoftmax.load if which == "packed" else BCQMatrix.load

    def load():
        obj = loader(io.BytesIO(data))
        obj.to_float() if which == "packed" else obj.dequantize()

    _must_be_value_error_or_succeed(load)


_member_value = st.one_of(
    st.integers(-2**63, 2**63 - 1).map(np.int64),
    st.floats(allow_nan=True).map(np.float64),
    st.booleans().map(np.bool_),
    st.text(max_size=8).map(np.str_),
    st.lists(st.integers(-5, 2**40), max_size=5).map(lambda v: np.array(v, np.int64)),
    st.lists(st.integers(0, 255), max_size=64).map(lambda v: np.array(v, np.uint8)),
    st.lists(st.integers(0, 300), max_size=64).map(lambda v: np.array(v, np.int16)),
)


@FUZZ
@given(which=st.sampled_from(["packed", "bcq"]), data=st.data())
def test_fuzz_npz_members(npz_bytes, which, data):
    """Well-formed archives whose members hold wrong values, dtypes and shapes."""
    with np.load(io.BytesIO(npz_bytes[which])) as f:
        members = {k: f[k] for k in f.files}
    names = sorted(members)
    for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        if data.draw(st.booleans()):
            members[name] = data.draw(_member_value)
        else:
            del members[name]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, value in members.items():
            with z.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    buf.seek(0)
    loader = PackedSoftmax.load if which == "packed" else BCQMatrix.load
    _must_be_value_error_or_succeed(lambda: loader(buf))


# --- Calibrator JSON ----------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def calibrator_state():
    cal = Calibrator(n_calib=2, bits=2, per_head=True, head_axis=0)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    for _ in range(3):
        cal.observe("layer.0", x)
    return json.loads(cal.to_json())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_fuzz_calibrator_json(calibrator_state, data):
    state = json.loads(json.dumps(calibrator_state))
    paths = [p for p in _paths(state) if p]
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        target = state
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = data.draw(_json)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent
    text = json.dumps(state)
    if data.draw(st.booleans()):
        text = _mutate(text.encode(), data.draw(st.lists(edit, min_size=1, max_size=2))).decode("utf-8", "replace")

    def load_and_use():
        cal = Calibrator.from_json(text)
        for name in cal.names():
            if cal.frozen(name):
                clip = cal[name]
                assert np.all(np.asarray(clip) < 0)

    _must_be_value_error_or_succeed(load_and_use)
