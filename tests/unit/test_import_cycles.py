"""No import cycles between the ``alignkit.eval`` modules, counting imports inside functions too.

The imports are read from the source with ``ast`` (nothing is imported), so a lazy ``import`` in a function body
counts the same as one at the top of the file: a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: the modules of the same package it imports anywhere in its source}``."""
    root = SRC / package.replace(".", "/")
    modules = {_module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, up level - 1 more
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets.add(mod)
                targets.update(f"{mod}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_sees_function_level_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_eval_modules():
    graph = import_graph("alignkit.eval")
    assert "alignkit.eval.compare" in graph["alignkit.eval.report"]  # the report reads CompareResult
    assert "alignkit.eval.html" in graph["alignkit.eval.report"]
    assert "alignkit.eval.report" not in graph["alignkit.eval.compare"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_import_cycle_in_alignkit():
    graph = import_graph("alignkit")
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_orchestrate_sits_above_eval_and_algorithms():
    """``alignkit.orchestrate`` runs stages and reads ``eval``; nothing in ``eval`` or ``algorithms`` imports it back."""
    graph = import_graph("alignkit")
    assert "alignkit.eval.html" in graph["alignkit.orchestrate.report"]
    assert "alignkit.eval.report" not in graph["alignkit.orchestrate.report"]
    upward = {
        (mod, dep)
        for mod, deps in graph.items()
        if mod.startswith(("alignkit.eval", "alignkit.algorithms"))
        for dep in deps
        if dep.startswith("alignkit.orchestrate")
    }
    assert not upward, f"imports of alignkit.orchestrate from below it: {sorted(upward)}"


def test_scoring_and_errors_are_leaves():
    """``alignkit.errors`` imports nothing of alignkit; ``alignkit.scoring`` only ``alignkit.errors``."""
    graph = import_graph("alignkit")
    assert graph["alignkit.errors"] == set()
    assert graph["alignkit.scoring"] == {"alignkit.errors"}
