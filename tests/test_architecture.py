"""The package's shape: its layers (import-linter), no import cycles, modules of at most
400 lines, and imports at the top of modules but for the lazy ones listed in
:mod:`dpap.runtime.optional`."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpap.runtime.optional import LAZY_ENTRY_POINTS, LAZY_IMPORTS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dpap"
MAX_LINES = 400


def modules() -> dict[str, tuple[Path, ast.Module, bool]]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, ast.parse(f.read_text(encoding="utf-8")), is_pkg)
    return out


def imported(node: ast.AST, here: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        pkg = here
        for _ in range(max(node.level - 1, 0)):
            pkg = pkg.rpartition(".")[0]
        src = (pkg + ("." + node.module if node.module else "")) if node.level else (node.module or "")
        return [src + "." + a.name for a in node.names] + [src]
    return []


def import_graph(mods) -> dict[str, set[str]]:
    """Module → the dpap modules it imports, anywhere in it (functions and TYPE_CHECKING
    blocks included); importing a package is a facade, not a tie, as for the project's
    cycle counter."""
    packages = {m for m, (_, _, p) in mods.items() if p}

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for m, (_, tree, is_pkg) in mods.items():
        here = m if is_pkg else m.rpartition(".")[0]
        graph[m] = {r for node in ast.walk(tree) for t in imported(node, here) if (r := resolve(t)) and r != m and r not in packages}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_dpap_modules():
    assert cycles(import_graph(modules())) == []


def test_no_module_over_400_lines():
    long = {str(f.relative_to(ROOT)): n for f, _, _ in modules().values() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_imports_inside_functions_are_only_the_listed_lazy_ones():
    bad = []
    for m, (f, tree, _) in modules().items():
        rel = str(f.relative_to(ROOT))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                name = (node.names[0].name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                if node.__class__ is ast.ImportFrom and node.level:
                    name = "dpap"
                if name in LAZY_IMPORTS or (name == "dpap" and rel in LAZY_ENTRY_POINTS):
                    continue
                bad.append(f"{rel}:{node.lineno} imports {name}")
    assert bad == []


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None, reason="import-linter is not installed: pip install -e '.[test]'")
def test_the_layers_contract_holds():
    """import-linter's contracts in pyproject.toml: the layers, top to bottom; the pruning
    registry over its methods; the methods independent of each other."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    p = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "3 kept, 0 broken" in p.stdout, p.stdout[-2000:]
