from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.contract import InfraCause
from worker.formatting import (
    format_change,
    format_duration,
    format_number,
    format_recoveries,
    format_time,
    parse_time,
    seconds_between,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (-0.2, "0.0 s"),
        (4.24, "4.2 s"),
        (42, "42 s"),
        (185, "3 min 05 s"),
        (7620, "2 h 07 min"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_numbers_and_changes() -> None:
    assert format_number(87.0) == "87"
    assert format_number(0.87254) == "0.8725"
    assert format_number(1e20) == "1e+20"
    assert format_change(0.9, 0.9) == "±0"
    assert format_change(0.9, 0.8) == "+0.1 (+12.5%)"
    assert format_change(-3, 0) == "-3"


def test_times() -> None:
    assert parse_time("") is None
    assert parse_time("not a time") is None
    assert parse_time("2026-12-01T10:00:09") == datetime(2026, 12, 1, 10, 0, 9, tzinfo=UTC)
    assert format_time("2026-12-01T11:00:09+01:00") == "2026-12-01 10:00:09 UTC"
    assert format_time(None) == ""
    assert seconds_between("2026-12-01T10:00:00+00:00", "2026-12-01T10:01:30+00:00") == 90
    assert seconds_between("", "2026-12-01T10:01:30+00:00") is None


def test_recoveries_are_counted_by_cause_in_order() -> None:
    assert format_recoveries([]) == ""
    assert format_recoveries([InfraCause.LOST]) == "recovered after preemption, 1\u00d7"
    assert format_recoveries([InfraCause.LOST, InfraCause.CONNECTION, InfraCause.LOST]) == (
        "recovered after preemption, 2\u00d7; recovered after a lost connection, 1\u00d7"
    )


# --- stages as a DAG -----------------------------------------------------------------------


def test_stage_flow_groups_stages_that_run_at_once() -> None:
    from worker.formatting import stage_flow

    assert stage_flow({"a": [], "b": ["a"], "c": ["b"]}) == ""
    assert stage_flow({"p": [], "l": ["p"], "r": ["p"], "j": ["l", "r"]}) == "p → l ∥ r → j"
    assert stage_flow({"a": [], "b": []}) == "a ∥ b"
    # A stage waits for its slowest need: c after b, which is after a.
    assert stage_flow({"a": [], "b": ["a"], "c": ["a", "b"], "d": []}) == "a ∥ d → b → c"
    # Needs outside the stages shown (a selection) are ignored.
    assert stage_flow({"x": ["gone"], "y": []}) == "x ∥ y"
