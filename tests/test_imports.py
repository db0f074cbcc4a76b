"""The import graph, read from the source (ast): floors, no circles, imports at the top (fast tier).

Floors, lowest first: harness/ (records, stores, statistics, backends, suites),
finetune/, judges/, reports/, then cli/ and app.py. A module may import its own
floor or lower ones, never a higher one. No module reaches itself through its
imports, deferred ones included. Project modules are imported at the top of the
file; an import inside a function is allowed only where the module imported
loads torch, vLLM, lm-eval, transformers or streamlit (directly or through its
own top-level imports), so `harness --help` stays fast.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOORS = {"harness": 0, "finetune": 1, "judges": 2, "reports": 3, "cli": 4, "app": 5}
HEAVY = {"torch", "vllm", "lm_eval", "transformers", "streamlit", "peft", "trl"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [REPO / "app.py", *(p for top in FLOORS if (REPO / top).is_dir() for p in (REPO / top).rglob("*.py"))]
    return {_module_name(p): p for p in files}


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module an imported dotted name lands on (a module, or the package holding the name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path, name: str) -> list[tuple[int, str, bool]]:
    """(line, imported name, at top level) for every import in the file; top level includes `if`/`try` blocks
    at module level, not functions or classes. TYPE_CHECKING blocks are skipped."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    pkg = name.split(".")[: -child.level] if not path.name == "__init__.py" else name.split(".")
                    base = ".".join([*pkg, base] if base else pkg)
                found.extend((child.lineno, f"{base}.{a.name}", top) for a in child.names)
                found.append((child.lineno, base, top))
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            visit(child, inner)

    visit(tree, True)
    return found


def _edges() -> dict[str, list[tuple[str, int, bool]]]:
    """module -> [(project module it imports, line, at top level)], packages' __init__ included as Python runs them."""
    edges: dict[str, list[tuple[str, int, bool]]] = {}
    for name, path in MODULES.items():
        out = edges.setdefault(name, [])
        for line, imported, top in _imports(path, name):
            target = _target(imported)
            if target is None or target == name:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                hop = ".".join(parts[:i])
                if hop in MODULES and hop != name and not name.startswith(hop + "."):
                    out.append((hop, line, top))
    return edges


EDGES = _edges()


def _floor(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def test_no_module_imports_a_higher_floor():
    upward = [f"{MODULES[m].relative_to(REPO)}:{line} imports {t}"
              for m, out in EDGES.items() for t, line, _ in out if _floor(t) > _floor(m)]
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(set(upward)))


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _, _ in EDGES.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(EDGES):
        if v not in index:
            strong(v)
    return found


def test_no_import_cycles():
    assert not _cycles(), "modules that import each other, directly or around a circle: " + str(_cycles())


def _loads_heavy(module: str, seen: set[str] | None = None) -> bool:
    """Whether importing `module` loads a heavy library through top-level imports."""
    seen = set() if seen is None else seen
    if module in seen:
        return False
    seen.add(module)
    for line, imported, top in _imports(MODULES[module], module):
        if not top:
            continue
        if imported.split(".")[0] in HEAVY:
            return True
        target = _target(imported)
        if target and target != module and _loads_heavy(target, seen):
            return True
    return False


def test_project_modules_are_imported_at_the_top():
    deferred = sorted({f"{MODULES[m].relative_to(REPO)}:{line} imports {t} inside a function"
                       for m, out in EDGES.items() for t, line, top in out
                       if not top and not t.endswith("__init__") and MODULES[t].name != "__init__.py"
                       and not _loads_heavy(t)})
    assert not deferred, ("import these at the top of the file (only modules that load torch, vLLM, lm-eval, "
                          "transformers or streamlit may be deferred):\n" + "\n".join(deferred))


def test_the_walk_sees_the_tree():
    # The checks above mean something only if the walk finds the floors and their edges.
    assert {"harness.store", "harness.backends.base", "cli.main", "judges.run", "reports.tables"} <= set(MODULES)
    assert any(t == "harness.store" for t, _, _ in EDGES["cli.runs"])
    assert _loads_heavy("harness.backends.lmeval_adapter")
    assert not _loads_heavy("harness.store")


@pytest.mark.parametrize("rule, edges, expect", [
    ("upward", {"harness.a": [("cli.b", 1, True)]}, "upward"),
    ("cycle", {"harness.a": [("harness.b", 1, True)], "harness.b": [("harness.a", 2, False)]}, "cycle"),
])
def test_the_checks_fail_on_a_bad_graph(monkeypatch, rule, edges, expect):
    monkeypatch.setattr(sys.modules[__name__], "EDGES", edges)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {m: REPO / "x.py" for m in ("harness.a", "harness.b", "cli.b")})
    if expect == "upward":
        with pytest.raises(AssertionError, match="upward"):
            test_no_module_imports_a_higher_floor()
    else:
        assert _cycles() == [["harness.a", "harness.b"]]
