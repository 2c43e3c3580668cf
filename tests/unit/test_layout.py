"""The layout holds: no import cycle, dependencies one way, no product module over 500 lines.

The import graph is built from the syntax tree of every module, so an import
inside a function or under ``TYPE_CHECKING`` counts like any other: a cycle
hidden by a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bus", "actors", "orchestrator")
MAX_LINES = 500
OVERSIZE_EXEMPT: set[str] = set()
MAY_IMPORT = {"bus": {"bus"}, "actors": {"bus", "actors"}, "orchestrator": set(PACKAGES)}
"""DESIGN.md: orchestrator uses actors and bus, actors uses bus, bus uses neither."""


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[str]:
    """Every product module that ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    """Module name -> the product modules it imports."""
    return {name: set(_imported(name, path)) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_product_module_takes_part_in_an_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_hidden_by_an_import_inside_a_function_is_found() -> None:
    graph = {"a": {"b"}, "b": set(), "c": set()}
    graph["b"].add("a")  # as `def f(): from a import x` in b would add
    assert find_cycle(graph) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_lazy_and_type_checking_imports_are_edges_of_the_graph(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bus import _errors\n"
        "def f():\n    from ._messages import AgentMessage\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert set(_imported("bus._probe", path)) == {"bus._errors", "bus._messages"}


def test_dependencies_point_one_way() -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in targets
        if target.partition(".")[0] not in MAY_IMPORT[name.partition(".")[0]]
    )
    assert not wrong


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_product_module_is_over_500_lines(path: Path) -> None:
    if str(path.relative_to(ROOT)) in OVERSIZE_EXEMPT:
        pytest.skip("exempt until the hot-path branch splits it")
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def _readme_map() -> list[str]:
    """The paths the README's "Where things live" map names, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Where things live\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def test_every_path_in_the_readme_map_exists() -> None:
    """Every folder and module the map names is in the tree (modules may be named too)."""
    paths = _readme_map()
    assert paths, "the README has no 'Where things live' map"
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert not missing


def test_the_readme_map_names_every_product_package() -> None:
    named = {path.rstrip("/") for path in _readme_map()}
    packages = {
        str(path.parent.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("__init__.py")
    }
    assert packages - named == set()
