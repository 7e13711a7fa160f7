from __future__ import annotations

import pytest

from worker.contract import GateResult, Verdict
from worker.gates import (
    MAX_GATE_CHARS,
    NOTE_BASE_MISSING,
    NOTE_NO_BASELINE,
    NOTE_NOT_REPORTED,
    Gate,
    GateSyntaxError,
    evaluate,
    evaluate_gate,
    failure_summary,
    parse_gate,
    undecided,
    verdict_of,
)


@pytest.mark.parametrize(
    ("text", "gate"),
    [
        ("accuracy >= 0.85", Gate("accuracy >= 0.85", "accuracy", ">=", 0.85)),
        ("  loss<0.1 ", Gate("loss<0.1", "loss", "<", 0.1)),
        ("loss <= -3", Gate("loss <= -3", "loss", "<=", -3.0)),
        ("f1 > 1e-3", Gate("f1 > 1e-3", "f1", ">", 0.001)),
        ("f1 > .5", Gate("f1 > .5", "f1", ">", 0.5)),
        ("acc >= base", Gate("acc >= base", "acc", ">=", None, 0.0)),
        ("acc >= base - 0.01", Gate("acc >= base - 0.01", "acc", ">=", None, -0.01)),
        ("acc>=base+2", Gate("acc>=base+2", "acc", ">=", None, 2.0)),
        ("eval/top-1 > base", Gate("eval/top-1 > base", "eval/top-1", ">", None, 0.0)),
        ("a.b:c <= base - -1", Gate("a.b:c <= base - -1", "a.b:c", "<=", None, 1.0)),
    ],
)
def test_gates_parse(text: str, gate: Gate) -> None:
    assert parse_gate(text) == gate


@pytest.mark.parametrize(
    "text",
    [
        "",
        "accuracy",
        "accuracy >= ",
        "accuracy = 0.85",
        "accuracy == 0.85",
        "accuracy => 0.85",
        "accuracy >= nan",
        "accuracy >= inf",
        "accuracy >= base -",
        "accuracy >= base * 2",
        "accuracy >= baseline",
        "accuracy >= 0.85 and loss < 1",
        "my accuracy >= 0.85",
        ">= 0.85",
        "accuracy >= 1e999",
        "accuracy >= base + 1e999",
    ],
)
def test_bad_gates_are_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text, "gates[3]")
    assert str(info.value).startswith("gates[3]: ")


def test_a_gate_longer_than_the_limit_is_refused_without_echo() -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate("a" * (MAX_GATE_CHARS + 1) + " >= 1")
    assert "limit is 200" in str(info.value) and "aaaa" not in str(info.value)


def result(text: str, metrics: dict[str, float], base: dict[str, float] | None) -> GateResult:
    return evaluate_gate(parse_gate(text), metrics, base)


def test_a_fixed_gate_compares_with_its_number() -> None:
    assert result("accuracy >= 95", {"accuracy": 93}, None) == GateResult(
        "accuracy >= 95", False, 93, 95, ""
    )
    assert result("accuracy >= 95", {"accuracy": 95}, None).passed
    assert not result("accuracy > 95", {"accuracy": 95}, None).passed
    assert result("loss <= 0.2", {"loss": 0.2}, None).passed
    assert not result("loss < 0.2", {"loss": 0.2}, None).passed


def test_a_base_gate_compares_with_the_baseline_value_plus_offset() -> None:
    ok = result("accuracy >= base - 0.01", {"accuracy": 0.85}, {"accuracy": 0.86})
    assert ok == GateResult("accuracy >= base - 0.01", True, 0.85, 0.85, "")  # no float drift
    worse = result("accuracy >= base - 0.01", {"accuracy": 0.84}, {"accuracy": 0.86})
    assert not worse.passed and worse.threshold == 0.85
    assert result("loss <= base", {"loss": 0.3}, {"loss": 0.3}).passed
    assert not result("loss < base + 0.1", {"loss": 0.5}, {"loss": 0.3}).passed


def test_a_missing_metric_fails_and_says_so_even_without_a_baseline() -> None:
    for text in ("accuracy >= 0.5", "accuracy >= base"):
        missing = result(text, {"loss": 1}, None)
        assert not missing.passed and missing.value is None
        assert missing.note == NOTE_NOT_REPORTED.format(name="accuracy")
        assert failure_summary(missing) == "accuracy not reported"


def test_a_base_gate_without_a_baseline_passes_saying_so() -> None:
    assert result("accuracy >= base", {"accuracy": 0.1}, None) == GateResult(
        "accuracy >= base", True, 0.1, None, NOTE_NO_BASELINE
    )
    no_value = result("accuracy >= base", {"accuracy": 0.1}, {"loss": 3})
    assert no_value.passed and no_value.note == NOTE_BASE_MISSING.format(name="accuracy")


def test_a_threshold_out_of_range_fails() -> None:
    huge = result("m > base + 1e308", {"m": 1}, {"m": 1.7e308})
    assert not huge.passed and huge.value is None and huge.threshold is None
    assert "finite" in huge.note and "finite" in failure_summary(huge)


def test_verdicts() -> None:
    gates = [parse_gate("a >= 1"), parse_gate("b <= 1")]
    assert verdict_of([]) is Verdict.NONE
    assert verdict_of(evaluate(gates, {"a": 1, "b": 1}, None)) is Verdict.PASSED
    assert verdict_of(evaluate(gates, {"a": 1, "b": 2}, None)) is Verdict.FAILED


def test_undecided_gates_fail() -> None:
    results = undecided(["a >= base"], "Temporal unreachable")
    assert verdict_of(results) is Verdict.FAILED
    assert results[0].note == "could not be decided: Temporal unreachable"


@pytest.mark.parametrize(
    ("text", "value", "summary"),
    [
        ("accuracy >= 0.85", 0.81, "accuracy 0.81 < 0.85"),
        ("accuracy > 0.85", 0.85, "accuracy 0.85 <= 0.85"),
        ("loss <= 0.2", 0.25, "loss 0.25 > 0.2"),
        ("loss < 2", 2, "loss 2 >= 2"),
    ],
)
def test_a_failed_gate_reads_as_the_comparison_that_did_not_hold(
    text: str, value: float, summary: str
) -> None:
    name = text.split()[0]
    assert failure_summary(result(text, {name: value}, None)) == summary
