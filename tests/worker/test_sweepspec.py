"""What a sweep is, pure: the cartesian product in table order, ids derived from the request,
each combination's run request, and the limit."""

from __future__ import annotations

import pytest

from worker.contract import GitHubTarget, RunRequest, SweepMember, Trigger, lane_for_pr
from worker.sweepspec import (
    SweepAxis,
    SweepRequest,
    SweepTooLarge,
    check_size,
    child_id,
    child_lane,
    child_request,
    combinations,
    describe,
    size,
    size_problem,
    sweep_id_for,
    sweeps_key,
)

LANE = lane_for_pr("acme/ml", 7)


def sweep(delivery: str = "d-1", **envs: str) -> SweepRequest:
    base = RunRequest(
        repo="acme/ml",
        clone_url="https://github.com/acme/ml.git",
        ref="feature",
        commit="a" * 40,
        stages=["train"],
        envs=dict(envs),
        trigger=Trigger.COMMENT,
        requested_by="alice",
        lane=LANE,
        delivery_id=delivery,
        github=GitHubTarget(installation_id=1, pr_number=7, comment_id=9),
    )
    return SweepRequest(
        base, [SweepAxis("LR", ["0.1", "0.2"]), SweepAxis("BS", ["32", "64", "128"])]
    )


def test_the_product_varies_the_first_axis_slowest() -> None:
    axes = sweep().axes
    assert size(axes) == 6 and size([]) == 0
    assert [describe(c) for c in combinations(axes)] == [
        "LR=0.1, BS=32",
        "LR=0.1, BS=64",
        "LR=0.1, BS=128",
        "LR=0.2, BS=32",
        "LR=0.2, BS=64",
        "LR=0.2, BS=128",
    ]


def test_the_sweep_id_is_derived_from_the_request() -> None:
    assert sweep_id_for(sweep()) == sweep_id_for(sweep())
    assert sweep_id_for(sweep()) != sweep_id_for(sweep("d-2"))
    assert sweep_id_for(sweep()).startswith("ml-sweep-")
    other = sweep()
    other.axes[1].values.append("256")
    assert sweep_id_for(other) != sweep_id_for(sweep())


def test_each_combination_is_its_own_run_in_its_own_lane() -> None:
    request = sweep(EPOCHS="3", LR="fixed")
    run = child_request(request, "S", 4)
    assert run.envs == {"EPOCHS": "3", "LR": "0.2", "BS": "64"}  # the sweep's value wins
    assert run.lane == child_lane(LANE, "S", 4) == f"{LANE}/sweep:S:4"
    assert run.sweep == SweepMember("S", 4, {"LR": "0.2", "BS": "64"})
    assert run.delivery_id == "d-1#5" and child_id("S", 4) == "S-5"
    assert (run.commit, run.stages, run.github) == (
        request.base.commit,
        ["train"],
        request.base.github,
    )
    assert request.base.envs == {"EPOCHS": "3", "LR": "fixed"} and request.base.sweep is None
    lanes = {child_request(request, "S", i).lane for i in range(6)}
    assert len(lanes) == 6 and LANE not in lanes and sweeps_key(LANE) not in lanes


def test_past_the_limit_the_count_is_given() -> None:
    axes = [
        SweepAxis("A", ["1", "2", "3"]),
        SweepAxis("B", ["1", "2", "3"]),
        SweepAxis("C", ["1", "2"]),
    ]
    assert size_problem(axes, 16) == "this sweep would start 18 runs; SKYRUN_MAX_SWEEP is 16"
    assert size_problem(axes, 18) == ""
    with pytest.raises(SweepTooLarge, match="18 runs; SKYRUN_MAX_SWEEP is 16"):
        check_size(axes, 16)
    huge = [SweepAxis(f"K{i}", ["a", "b"]) for i in range(60)]
    assert "1,152,921,504,606,846,976 runs" in size_problem(huge, 16)
