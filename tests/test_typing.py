"""The shipped annotations as a user's type checker sees them: mypy on two
small scripts (tests/typing/), one that must pass and one whose every marked
line must be an error (the test can fail both ways)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import exaq_cpu

HERE = Path(__file__).parent / "typing"

try:
    import mypy  # noqa: F401
except ImportError:  # pragma: no cover - the test extras install mypy
    if os.environ.get("CI"):
        raise
    pytest.skip("mypy is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def errors():
    """mypy's error lines for both scripts (one run), against the exaq_cpu this test imports."""
    env = dict(os.environ)
    home = Path(exaq_cpu.__file__).parent.parent
    if home.name not in ("site-packages", "dist-packages"):  # a source checkout (mypy refuses site-packages here)
        env["MYPYPATH"] = str(home)
    run = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                          "--no-incremental", "--no-error-summary", "user_ok.py", "user_bad.py"],
                         cwd=HERE, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 1) and "error: " not in run.stderr, (run.returncode, run.stdout, run.stderr)
    return [line for line in run.stdout.splitlines() if ": error:" in line]


def test_typed_user_script_passes(errors):
    assert [e for e in errors if e.startswith("user_ok.py")] == []


def test_misuse_is_caught(errors):
    bad = [e for e in errors if e.startswith("user_bad.py")]
    lines = sorted({int(e.split(":")[1]) for e in bad})
    assert lines == [5, 6, 7], bad  # bits=5, a PackedSoftmax as an ndarray, floor="one"


def test_core_stub_declares_every_public_name():
    import re

    from exaq_cpu import _core

    stub = (Path(_core.__file__).parent / "_core.pyi").read_text()
    declared = set(re.findall(r"^(?:def|class)\s+(\w+)", stub, re.M)) | set(re.findall(r"^(\w+)\s*:", stub, re.M))
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert public - declared == set()
