"""The layout rules of the code base, checked on every test run.

The contracts live in ``.importlinter`` (also runnable as ``lint-imports``); this test runs them
and, beyond them, refuses any import cycle between two modules of the project.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("email_engine_assets", "email_engine_resources")


def test_import_linter_contracts_are_kept():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a test dependency (pyproject.toml [test])"
    done = subprocess.run([lint_imports, "--no-cache", "--config", ".importlinter"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


def _module_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(m for m in graph.modules if m.startswith(PACKAGES))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c.startswith(PACKAGES)), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycle_between_any_two_modules():
    graph = grimp.build_graph(*PACKAGES)
    assert _module_cycles(graph) == []


def test_cycle_finder_sees_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("email_engine_assets.a", "email_engine_assets.b", "email_engine_assets.c"):
        graph.add_module(name)
    graph.add_import(importer="email_engine_assets.a", imported="email_engine_assets.b")
    graph.add_import(importer="email_engine_assets.b", imported="email_engine_assets.a")
    graph.add_import(importer="email_engine_assets.b", imported="email_engine_assets.c")
    assert _module_cycles(graph) == [["email_engine_assets.a", "email_engine_assets.b"]]
