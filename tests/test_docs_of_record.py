"""The documents the repository cites are in the repository (issue 17).

Pure file checks: no compiled extension is needed (``python -m pytest --noconftest
tests/test_docs_of_record.py`` runs it without a build).
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
# spelled in two pieces so that this file does not contain it
OUTSIDE = "shared" + "/"


def _shipped_text_files():
    patterns = [
        "README.md", "CHANGELOG.md", "MANIFEST.in", "setup.py", "pyproject.toml",
        "docs/*.md",
        "src/**/*.py", "src/**/*.pyx", "src/**/*.pxi", "src/**/*.pyi",
        "c/**/*.c", "c/**/*.h", "c/**/*.sh", "c/**/Makefile",
        "tests/*.py",
        "bench/*.py",
    ]
    files = set()
    for pattern in patterns:
        files.update(p.resolve() for p in ROOT.glob(pattern) if p.is_file())
    files.discard(THIS)
    return sorted(files)


def test_the_shipped_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in _shipped_text_files()}
    for expected in ("README.md", "docs/semantics.md", "c/exaq.h", "c/lutgemm.h", "tests/oracle.py",
                     "src/exaq_cpu/__init__.py", "src/exaq_cpu/lutgemm.py", "setup.py", "pyproject.toml"):
        assert expected in names


def test_nothing_shipped_cites_a_file_outside_the_repository():
    offenders = []
    for path in _shipped_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "files outside the repository are cited:\n" + "\n".join(offenders)


def _semantics_sections():
    text = (ROOT / "docs" / "semantics.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.M))


def test_citations_of_semantics_name_existing_sections():
    sections = _semantics_sections()
    assert {"1", "2", "3", "9"} <= sections
    cite = re.compile(r"semantics\.md`*\)?,? *\(?(?:sections?|§) *(\d+(?:\.\d+)?)(?:-(\d+))?")
    missing = []
    for path in _shipped_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in cite.finditer(text):
            for number in filter(None, m.groups()):
                if number not in sections:
                    missing.append(f"{path.relative_to(ROOT)}: section {number}")
    assert not missing, "docs/semantics.md has no such section:\n" + "\n".join(missing)


def test_license_is_mit_and_shipped():
    license_file = ROOT / "LICENSE"
    assert license_file.is_file()
    assert license_file.read_text(encoding="utf-8").startswith("MIT License")
    assert 'license = {text = "MIT"}' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").split("\n")
    assert "include LICENSE" in manifest
