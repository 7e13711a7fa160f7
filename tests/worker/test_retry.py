"""Which stages a retry reuses and which run again, and why (pure)."""

from __future__ import annotations

import pytest

from worker.contract import (
    GateResult,
    RunProgress,
    RunRequest,
    RunState,
    StageProgress,
    StageState,
    SweepMember,
    Trigger,
    Verdict,
    lane_for_branch,
)
from worker.retry import (
    MAX_RUN_ID,
    plan_retry,
    planned_request,
    refusal,
    retry_request,
    retry_run_id,
    stage_list,
    stage_note,
)

S, F, C, K = StageState.SUCCEEDED, StageState.FAILED, StageState.CANCELLED, StageState.SKIPPED


def run(state: RunState, *stages: tuple[str, str, StageState]) -> RunProgress:
    return RunProgress(
        run_id="widgets-0123456789",
        repo="acme/widgets",
        ref="main",
        commit="a" * 40,
        trigger=Trigger.CLI,
        requested_by="ann",
        state=state,
        stages=[
            StageProgress(name, cluster, state=st, metrics={name: 1.0})
            for name, cluster, st in stages
        ],
    )


def test_the_failed_stage_and_what_shares_its_cluster_run_again_the_rest_is_reused() -> None:
    plan = plan_retry(
        run(
            RunState.FAILED,
            ("preprocess", "preprocess", S),
            ("train", "train", S),
            ("eval", "train", F),
            ("publish", "publish", K),
        )
    )
    assert plan.rerun == ["train", "eval", "publish"]
    assert [s.name for s in plan.reused] == ["preprocess"]
    assert plan.reused[0].reused_from == "widgets-0123456789"
    assert plan.reused[0].metrics == {"preprocess": 1.0}
    assert plan.reasons == {
        "train": "shares cluster train with eval, which failed",
        "eval": "it failed",
        "publish": "it did not run",
    }


def test_a_later_stage_on_the_cluster_does_not_pull_in_an_earlier_one_of_another_cluster() -> None:
    plan = plan_retry(run(RunState.CANCELLED, ("a", "x", S), ("b", "y", S), ("c", "y", C)))
    assert plan.rerun == ["b", "c"]
    assert plan.reasons["b"] == "shares cluster y with c, which was cancelled"
    assert plan.reasons["c"] == "it was cancelled"


def test_a_timed_out_stage_is_named_as_such() -> None:
    plan = plan_retry(run(RunState.TIMED_OUT, ("a", "x", S), ("b", "x", F)))
    assert plan.reasons == {"a": "shares cluster x with b, which timed out", "b": "it timed out"}


def test_a_stage_reused_twice_keeps_the_run_that_executed_it() -> None:
    progress = run(RunState.FAILED, ("a", "a", S), ("b", "b", F))
    progress.stages[0].reused_from = "widgets-first"
    plan = plan_retry(progress)
    assert plan.reused[0].reused_from == "widgets-first"


@pytest.mark.parametrize(
    ("progress", "pattern"),
    [
        (None, "was not found"),
        (run(RunState.RUNNING, ("a", "a", StageState.RUNNING)), "is still running"),
        (run(RunState.QUEUED), "is still queued"),
        (run(RunState.SUCCEEDED, ("a", "a", S)), "nothing to retry"),
        (run(RunState.FAILED), "before any stage ran"),
        (run(RunState.DENIED), "before any stage ran"),
        (run(RunState.FAILED, ("a", "a", K)), "before any stage ran"),
    ],
)
def test_refusals_say_why(progress: RunProgress | None, pattern: str) -> None:
    assert pattern in refusal(progress, "widgets-0123456789")


def test_only_failed_gates_are_refused_with_the_gates_and_the_way_out() -> None:
    progress = run(RunState.SUCCEEDED, ("a", "a", S))
    progress.verdict = Verdict.FAILED
    progress.gates = [GateResult("accuracy >= 0.95", False, 0.9, 0.95)]
    reason = refusal(progress, "widgets-0123456789")
    assert "only its gates failed (`accuracy >= 0.95`)" in reason
    assert "a retry would run nothing" in reason and "/skyrun" in reason


def test_a_failed_or_cancelled_run_with_a_stage_can_be_retried() -> None:
    assert refusal(run(RunState.FAILED, ("a", "a", F)), "x") == ""
    assert refusal(run(RunState.CANCELLED, ("a", "a", K)), "x") == ""


def test_retry_ids_are_derived_and_count_up() -> None:
    assert retry_run_id("w-1") == "w-1-retry"
    assert retry_run_id("w-1-retry") == "w-1-retry2"
    assert retry_run_id("w-1-retry9") == "w-1-retry10"
    long = "x" * MAX_RUN_ID
    assert len(retry_run_id(long)) <= MAX_RUN_ID
    assert retry_run_id(long) != retry_run_id("y" + long[1:])


def test_the_retry_request_keeps_commit_values_lane_and_learned_branch() -> None:
    original = RunRequest(
        repo="acme/widgets",
        clone_url="https://github.test/acme/widgets.git",
        envs={"LR": "0.1"},
        lane=lane_for_branch("acme/widgets", "default"),
        delivery_id="d-1",
        check_push_filter=True,
        trigger=Trigger.SLACK,
    )
    progress = run(RunState.FAILED, ("a", "a", S), ("b", "b", F))
    plan = plan_retry(progress)
    request = retry_request(original, progress, plan, requested_by="bob")
    assert request.commit == "a" * 40 and request.ref == "main"
    assert request.lane == lane_for_branch("acme/widgets", "main")
    assert request.envs == {"LR": "0.1"} and request.stages == ["a", "b"]
    assert request.requested_by == "bob" and request.trigger is Trigger.SLACK
    assert request.delivery_id == "" and not request.check_push_filter
    assert request.retry_of == progress.run_id
    assert planned_request(request).stages == ["b"]
    assert planned_request(original) is original

    listed = stage_list(request, [StageProgress("b", "b")])
    assert [(s.name, s.state) for s in listed] == [("a", S), ("b", StageState.PENDING)]
    assert stage_note(listed[0]) == f"reused from {progress.run_id}"
    assert stage_note(listed[1]) == "runs again: it failed"
    assert stage_note(StageProgress("c", "c")) == ""


def test_a_retried_sweep_run_is_a_run_of_its_own() -> None:
    original = RunRequest(
        repo="acme/widgets",
        clone_url="https://github.test/acme/widgets.git",
        envs={"LR": "0.1"},
        lane="acme/widgets#pr:3/sweep:s-1:1",
        sweep=SweepMember("s-1", 1, {"LR": "0.1"}),
    )
    progress = run(RunState.FAILED, ("a", "a", S), ("b", "b", F))
    request = retry_request(original, progress, plan_retry(progress))
    assert request.sweep is None  # it reports itself: the sweep's table is complete
    assert request.lane == original.lane and request.envs == {"LR": "0.1"}
