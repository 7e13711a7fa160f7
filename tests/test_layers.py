"""The layers, checked from the source: `bot` → `worker` only, no import cycles, and the modules
`skyrun bot` loads never reach SkyPilot, the compute backends, the workflow or the activities."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "worker")
COMPOSITION_ROOTS = {"bot.cli", "bot.dev"}
"""The command line composes bot, worker and Temporal; its other commands import lazily."""
NEVER_IN_THE_BOT = ("sky", "worker.backends", "worker.workflow", "worker.activities")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            node.body = []  # type-only imports run nothing
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@cache
def imports(name: str) -> frozenset[str]:
    """What a module of ours imports anywhere in it (lazily too), as names of our modules or
    as the outside names themselves."""
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    found = set()
    for target in _imported(tree):
        if target.split(".")[0] in PACKAGES:
            if target in modules():
                found.add(target)
            elif target.rsplit(".", 1)[0] in modules():
                found.add(target.rsplit(".", 1)[0])  # `from pkg.mod import name`
        else:
            found.add(target)
    found.discard(name)
    return frozenset(found)


def ours(names: frozenset[str]) -> set[str]:
    return {name for name in names if name in modules()}


def test_worker_never_imports_bot() -> None:
    wrong = {
        name: sorted(n for n in imports(name) if n.split(".")[0] == "bot")
        for name in modules()
        if name.split(".")[0] == "worker"
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_no_import_cycles() -> None:
    graph = {name: ours(imports(name)) for name in modules()}
    cycles = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_bot_never_loads_skypilot_backends_workflow_or_activities() -> None:
    start = [
        name for name in modules() if name.split(".")[0] == "bot" and name not in COMPOSITION_ROOTS
    ]
    reached: dict[str, str] = {}
    todo = [(name, name) for name in start]
    while todo:
        name, via = todo.pop()
        if name in reached:
            continue
        reached[name] = via
        if name in modules():
            todo += [(target, f"{via} → {target}") for target in imports(name)]
    forbidden = {
        name: via
        for name, via in reached.items()
        if any(name == bad or name.startswith(f"{bad}.") for bad in NEVER_IN_THE_BOT)
    }
    assert forbidden == {}
