"""A run's cost from its clusters' up times, and how estimates and costs read."""

from __future__ import annotations

import pytest

from worker.contract import (
    ClusterCost,
    RunProgress,
    StageEstimate,
    StageProgress,
    StageState,
    Trigger,
)
from worker.costview import (
    account,
    cost_text,
    estimate_line,
    estimate_text,
    format_minutes,
    format_usd,
    total_of,
)

T0 = "2026-12-01T10:00:00+00:00"


def at(minutes: float) -> str:
    from datetime import datetime, timedelta

    return (datetime.fromisoformat(T0) + timedelta(minutes=minutes)).isoformat()


def run(*stages: StageProgress, clusters: list[ClusterCost]) -> RunProgress:
    progress = RunProgress("r", "acme/ml", "main", "c" * 40, Trigger.PUSH, "alice")
    progress.stages = list(stages)
    progress.clusters = clusters
    return progress


def stage(name: str, cluster: str, minutes: float, launched: bool) -> StageProgress:
    return StageProgress(
        name, cluster, StageState.SUCCEEDED, duration_s=minutes * 60, launched=launched
    )


def test_a_cluster_costs_its_price_times_its_whole_time_up_and_the_stages_add_up() -> None:
    progress = run(
        stage("prep", "prep", 4, True),
        stage("train", "train", 50, True),
        stage("eval", "train", 6, False),
        StageProgress("report", "report", StageState.SKIPPED),
        clusters=[
            ClusterCost("prep", "sr-r-prep", 0.6, T0, at(5), busy_s=240),
            # Launch started at 5, down finished at 65: 60 minutes up, 56 of them running.
            ClusterCost("train", "sr-r-train", 3.0, at(5), at(65), busy_s=56 * 60),
        ],
    )

    account(progress, at(70))

    prep, train = progress.clusters
    assert prep.up_s == 300 and prep.cost_usd == pytest.approx(0.05)
    assert train.up_s == 3600 and train.cost_usd == pytest.approx(3.0)
    costs = {s.name: s.cost_usd for s in progress.stages}
    # eval pays its own 6 minutes; train (the launcher) the rest: provisioning, idle, teardown.
    assert costs == {
        "prep": pytest.approx(0.05),
        "train": pytest.approx(2.7),
        "eval": pytest.approx(0.3),
        "report": None,
    }
    assert progress.cost_usd == pytest.approx(3.05)
    text = cost_text(progress)
    assert text.startswith("$3.05: prep $0.60/h \u00d7 up 5 min 00 s (4 min 00 s running, ")
    assert "train $3.00/h \u00d7 up 1 h 00 min (56 min 00 s running, 4 min 00 s " in text


def test_a_cluster_provisioned_ahead_shows_its_idle_time_and_what_it_cost() -> None:
    # Up 0 to 20 min: 5 min provisioning ahead of its stage, 3 min waiting for the stage's
    # needs, 10 min running, 2 min teardown: 5 idle minutes at $6/h cost $0.50.
    cluster = ClusterCost("train", "sr-r-train", 6.0, T0, at(20), busy_s=600, provision_s=300)
    progress = run(stage("train", "train", 10, True), clusters=[cluster])
    account(progress, at(20))
    assert progress.cost_usd == pytest.approx(2.0)
    assert cost_text(progress) == (
        "$2.00: train $6.00/h \u00d7 up 20 min 00 s (10 min 00 s running, 5 min 00 s "
        "provisioning ahead, 5 min 00 s idle/teardown costing $0.50)"
    )


def test_a_cluster_still_up_costs_until_now_and_says_so() -> None:
    progress = run(
        StageProgress("train", "train", StageState.RUNNING, launched=True),
        clusters=[ClusterCost("train", "sr-r-train", 6.0, T0)],
    )
    account(progress, at(30))
    assert progress.cost_usd == pytest.approx(3.0)
    assert progress.stages[0].cost_usd == pytest.approx(3.0)
    assert "up 30 min 00 s so far" in cost_text(progress)
    account(progress, at(40))  # a later look costs more
    assert progress.cost_usd == pytest.approx(4.0)


def test_an_unknown_price_makes_the_run_cost_unknown_not_zero() -> None:
    progress = run(
        stage("a", "a", 1, True),
        stage("b", "b", 1, True),
        clusters=[
            ClusterCost("a", "sr-r-a", 1.0, T0, at(2), busy_s=60),
            ClusterCost("b", "sr-r-b", None, at(2), at(4), busy_s=60),
        ],
    )
    account(progress, at(5))
    assert progress.clusters[0].cost_usd == pytest.approx(1 / 30, abs=1e-6)
    assert progress.clusters[1].cost_usd is None and progress.stages[1].cost_usd is None
    assert progress.cost_usd is None
    assert cost_text(progress).startswith("unknown: ")
    assert "b up 2 min 00 s (price unknown)" in cost_text(progress)


def test_no_cluster_no_cost_and_a_bad_time_changes_nothing() -> None:
    progress = run(stage("a", "a", 1, True), clusters=[])
    account(progress, at(1))
    assert progress.cost_usd is None and cost_text(progress) == ""
    progress.clusters = [ClusterCost("a", "sr-r-a", 1.0, T0)]
    account(progress, "not a time")
    assert progress.cost_usd is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "unknown"), (0, "$0.00"), (0.004, "<$0.01"), (4.1, "$4.10"), (12345.678, "$12,345.68")],
)
def test_dollars_read_as_dollars(value: float | None, text: str) -> None:
    assert format_usd(value) == text


@pytest.mark.parametrize(
    ("minutes", "text"), [(0.001, "<1 s"), (0.7, "42 s"), (55.2, "55 min"), (180, "180 min")]
)
def test_minutes_read_as_an_estimate_speaks(minutes: float, text: str) -> None:
    assert format_minutes(minutes) == text


def test_the_estimate_says_where_each_duration_comes_from() -> None:
    lines = [
        StageEstimate("train", "train", "1\u00d7 A100", 3.67, 55, "run-7", 3.364),
        StageEstimate("eval", "train", "", 3.67, 180, "", 11.01),
        StageEstimate("gpu", "gpu", "", None, 180, "", None, "no catalog"),
    ]
    assert estimate_line(lines[0]) == "train 1\u00d7 A100 $3.67/h \u00d7 ~55 min, from run run-7"
    assert (
        estimate_line(lines[1])
        == "eval on train's cluster $3.67/h \u00d7 worst case 180 min: no earlier successful run"
    )
    assert estimate_line(lines[2]) == "gpu: price unknown (no catalog)"
    progress = run(clusters=[])
    assert estimate_text(progress) == ""
    progress.estimate, progress.estimate_usd = lines[:2], total_of(lines[:2])
    assert estimate_text(progress).startswith("\u2248 $14.37: train 1\u00d7 A100 $3.67/h")
    progress.estimate, progress.estimate_usd = lines, total_of(lines)
    assert progress.estimate_usd is None
    assert estimate_text(progress).startswith("estimate unknown: train ")
