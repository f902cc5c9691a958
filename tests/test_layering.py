"""The Python layers import downwards only: no import circle among the
package's modules, counting imports inside functions too (a lazy import that
reaches back up is still a circle, only hidden)."""
import ast
from pathlib import Path

import exaq_cpu

PACKAGE = Path(exaq_cpu.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set:
    """Package modules `name` imports anywhere in its source (their packages' __init__ excluded)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("exaq_cpu"):
                continue
            for alias in node.names:  # "from . import packed" names a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("exaq_cpu"))
    return {m for m in found if m in MODULES and m != name}


SOURCES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
MODULES = set(SOURCES) | {"exaq_cpu._core"}
GRAPH = {name: _imports(path, name) for name, path in SOURCES.items()}


def _cycle():
    """One import circle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            # a package's __init__ runs before its submodules: importing a parent is not an edge back
            if m.startswith(n + "."):
                continue
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_walk_sees_the_package():
    assert {"exaq_cpu._api", "exaq_cpu._args", "exaq_cpu.packed", "exaq_cpu.lutgemm",
            "exaq_cpu.clipping._model"} <= set(GRAPH)
    assert "exaq_cpu._args" in GRAPH["exaq_cpu._api"] and "exaq_cpu.packed" in GRAPH["exaq_cpu._api"]


def test_no_import_circle():
    assert _cycle() is None, " -> ".join(_cycle())


def test_the_argument_layer_imports_no_public_module():
    assert GRAPH["exaq_cpu._args"] <= {"exaq_cpu._core"}
