"""Seeded mutations of JSON-shaped requests, for fuzzing the front doors (shared helper module)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from typing import Any

Path = tuple[str | int, ...]


def nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


def hostile_values(marker: str) -> list[Any]:
    """Values GitHub or Slack never send where skyrun reads a field."""
    return [
        None,
        True,
        False,
        0,
        -1,
        2**70,
        1.5,
        "",
        " ",
        "x" * 70_000,
        "lone \ud800 surrogate",
        "nul\x00byte",
        f"--upload-pack=touch {marker}",
        "-rf",
        "/tmp",
        "../../etc/passwd",
        "refs/heads/a..b",
        "refs/heads/-x",
        "a" * 40,
        "G" * 40,
        "/skyrun " + "A=" + "y" * 10_000,
        "\u202etxt.exe",
        [],
        {},
        ["x"],
        {"id": "x"},
        nested(60),
        [[[[[]]]]],
    ]


def paths(value: Any, prefix: Path = (), depth: int = 6) -> list[Path]:
    """Every path to a value inside `value` (dict keys and list indices), to `depth` levels."""
    found: list[Path] = []
    if depth == 0:
        return found
    items: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(index, child) for index, child in enumerate(value[:3])]
    for key, child in items:
        path = (*prefix, key)
        found.append(path)
        found.extend(paths(child, path, depth - 1))
    return found


def _parent(root: Any, path: Path) -> Any:
    node = root
    for key in path[:-1]:
        node = node[key]
    return node


def mutate(
    payload: dict[str, Any], rng: random.Random, marker: str, focus: Sequence[Path] = ()
) -> dict[str, Any]:
    """One to three random changes: a key removed, a value replaced, wrapped or nested.

    Paths in `focus` (the fields the code under test reads) are picked most of the time.
    """
    result = copy.deepcopy(payload)
    values = hostile_values(marker)
    for _ in range(rng.randint(1, 3)):
        candidates = paths(result)
        if not candidates:
            break
        focused = [path for path in focus if path in candidates]
        path = rng.choice(focused if focused and rng.random() < 0.75 else candidates)
        parent = _parent(result, path)
        key = path[-1]
        operation = rng.random()
        if operation < 0.2 and isinstance(parent, dict):
            del parent[key]
        elif operation < 0.3:
            parent[key] = [parent[key]]
        elif operation < 0.35:
            parent[key] = nested(rng.randint(10, 80))
        else:
            parent[key] = copy.deepcopy(rng.choice(values))
    return result


def mutations(
    payload: dict[str, Any], seed: int, count: int, marker: str, focus: Sequence[Path] = ()
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for _ in range(count):
        yield mutate(payload, rng, marker, focus)


def dotted(*names: str) -> list[Path]:
    """Paths written as `a.b.0.c` (digits are list indices)."""
    return [tuple(int(p) if p.isdigit() else p for p in name.split(".")) for name in names]
