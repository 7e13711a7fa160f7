"""Quality gates (`gates:` in the pipeline file): parse `NAME OP NUMBER` / `NAME OP base [± N]`
and decide them against a run's metrics and its baseline's. Pure: no I/O.

The verdict is decided once, at the end of the run (the `evaluate_gates` activity), and kept in
its progress; every surface shows that record instead of deciding again.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from worker.contract import GateResult, Verdict
from worker.formatting import format_number

MAX_GATES = 50
MAX_GATE_CHARS = 200

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
NEGATED = {">=": "<", ">": "<=", "<=": ">", "<": ">="}
"""How a failed comparison reads: `accuracy 0.81 < 0.85` for a failed `accuracy >= 0.85`."""

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_GATE = re.compile(
    rf"\s*(?P<name>[A-Za-z0-9_.:/-]*[A-Za-z0-9_.:/])\s*(?P<op>>=|<=|>|<)\s*"
    rf"(?:(?P<number>{_NUMBER})|base(?:\s*(?P<sign>[+-])\s*(?P<offset>{_NUMBER}))?)\s*"
)

E_GATE_SYNTAX = (
    "{path}: cannot read gate {expr}: write NAME OP NUMBER or NAME OP base [+ N | - N], "
    "OP one of >=, >, <=, < (for example 'accuracy >= 0.85' or 'loss <= base + 0.01')"
)
E_GATE_NUMBER = "{path}: {number} in gate {expr} is not a finite number"
E_GATE_TOO_LONG = "{path} is {size:,} characters long; the limit is {limit}"
E_TOO_MANY_GATES = "gates lists {count:,} gates; the limit is {limit}"

NOTE_NOT_REPORTED = "the run did not report {name}"
NOTE_NO_BASELINE = "no baseline"
NOTE_BASE_MISSING = "no baseline: the baseline run did not report {name}"
NOTE_OUT_OF_RANGE = "{name} or its threshold is not a finite number"
NOTE_UNDECIDED = "could not be decided: {error}"
FAILED_SUMMARY = "{name} {value} {op} {threshold}"
FAILED_MISSING = "{name} not reported"


class GateSyntaxError(ValueError):
    """A gate expression that cannot be read; the message names it and the expected form."""


@dataclass(frozen=True)
class Gate:
    expr: str
    """As written in the pipeline file (stripped)."""
    metric: str
    op: str
    number: float | None = None
    """The fixed threshold; None for a `base` gate."""
    offset: float = 0.0
    """Added to the baseline's value for a `base` gate (`base - 0.01`: -0.01)."""

    @property
    def against_base(self) -> bool:
        return self.number is None


def _finite(text: str, path: str, expr: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise GateSyntaxError(E_GATE_NUMBER.format(path=path, number=text, expr=repr(expr)))
    return value


def parse_gate(text: str, path: str = "gate") -> Gate:
    """One gate expression; `path` (e.g. "gates[0]") prefixes the error."""
    expr = text.strip()
    if len(expr) > MAX_GATE_CHARS:
        raise GateSyntaxError(
            E_GATE_TOO_LONG.format(path=path, size=len(expr), limit=MAX_GATE_CHARS)
        )
    match = _GATE.fullmatch(expr)
    if match is None:
        raise GateSyntaxError(E_GATE_SYNTAX.format(path=path, expr=repr(expr)))
    number, offset = match["number"], match["offset"]
    if number is not None:
        return Gate(expr, match["name"], match["op"], number=_finite(number, path, expr))
    delta = _finite(offset, path, expr) if offset is not None else 0.0
    return Gate(expr, match["name"], match["op"], offset=-delta if match["sign"] == "-" else delta)


def _threshold(value: float) -> float:
    # `base - 0.01` in binary floats can land a hair off the decimal a user compares with.
    return float(f"{value:.12g}")


def evaluate_gate(
    gate: Gate, metrics: Mapping[str, float], baseline: Mapping[str, float] | None
) -> GateResult:
    """One gate against the run's `metrics` and the baseline run's (None: there is none)."""
    value = metrics.get(gate.metric)
    threshold: float | None = gate.number
    note = ""
    if gate.against_base:
        base = None if baseline is None else baseline.get(gate.metric)
        if base is not None:
            threshold = _threshold(base + gate.offset)
        else:
            note = (
                NOTE_NO_BASELINE if baseline is None else NOTE_BASE_MISSING.format(name=gate.metric)
            )
    if value is None:
        return GateResult(
            gate.expr, False, None, threshold, NOTE_NOT_REPORTED.format(name=gate.metric)
        )
    if not math.isfinite(value) or (threshold is not None and not math.isfinite(threshold)):
        # Metrics are finite (worker/logparse.py); `base + 1e308` may not be.
        return GateResult(gate.expr, False, None, None, NOTE_OUT_OF_RANGE.format(name=gate.metric))
    if threshold is None:  # a `base` gate without a baseline value passes
        return GateResult(gate.expr, True, value, None, note)
    return GateResult(gate.expr, OPERATORS[gate.op](value, threshold), value, threshold, note)


def evaluate(
    gates: Sequence[Gate], metrics: Mapping[str, float], baseline: Mapping[str, float] | None
) -> list[GateResult]:
    return [evaluate_gate(gate, metrics, baseline) for gate in gates]


def undecided(exprs: Sequence[str], error: str) -> list[GateResult]:
    """Gates that could not be decided (no baseline lookup possible): each fails, saying why.

    A required check must not pass on a comparison that never happened.
    """
    return [
        GateResult(expr, False, None, None, NOTE_UNDECIDED.format(error=error)) for expr in exprs
    ]


def verdict_of(results: Sequence[GateResult]) -> Verdict:
    if not results:
        return Verdict.NONE
    return Verdict.PASSED if all(result.passed for result in results) else Verdict.FAILED


def failure_summary(result: GateResult) -> str:
    """How a failed gate reads in a title: `accuracy 0.81 < 0.85`, `accuracy not reported`."""
    match = _GATE.fullmatch(result.expr)
    name = match["name"] if match else result.expr
    if result.value is None or result.threshold is None or match is None:
        if result.note == NOTE_NOT_REPORTED.format(name=name):
            return FAILED_MISSING.format(name=name)
        return f"{result.expr} ({result.note})" if result.note else result.expr
    return FAILED_SUMMARY.format(
        name=name,
        value=format_number(result.value),
        op=NEGATED[match["op"]],
        threshold=format_number(result.threshold),
    )
