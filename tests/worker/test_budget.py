"""Budgets: which estimates wait for approval (fail closed), and the wait itself on a real
worker: nothing launched before approval, `skyrun approve` lets the run go, an unapproved run
ends cancelled when its (durable) timer runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.runs import clusters_left, request_for, wait_finished
from worker.budget import (
    DEPLOYMENT_SOURCE,
    EXPIRED,
    OVER_DEPLOYMENT,
    OVER_PIPELINE,
    UNKNOWN_ESTIMATE,
    Verdict,
    judge,
)
from worker.contract import RunProgress, RunState, StageState
from worker.process import build_workers, running_workers
from worker.runcontrol import NOT_WAITING, RunControl
from worker.settings import Settings


def test_no_limit_no_approval_even_for_an_unknown_estimate() -> None:
    assert judge(None, 0, 0) == Verdict("")
    assert judge(1e9, 0, 0) == Verdict("")


def test_the_tighter_limit_decides_and_an_estimate_at_the_limit_passes() -> None:
    assert judge(5.0, 5.0, 0) == Verdict("")
    assert judge(5.01, 5.0, 100) == Verdict(
        OVER_PIPELINE.format(estimate="$5.01", limit="$5.00"), 5.0
    )
    assert judge(7.0, 10.0, 6.5) == Verdict(
        OVER_DEPLOYMENT.format(estimate="$7.00", limit="$6.50"), 6.5
    )


def test_an_unknown_estimate_with_a_limit_set_waits_for_approval() -> None:
    verdict = judge(None, 0, 20)
    assert verdict == Verdict(UNKNOWN_ESTIMATE.format(limit="$20.00", source=DEPLOYMENT_SOURCE), 20)


FILES = {
    ".skyrun.yaml": (
        "budget: {max_run_usd: 1}\ntimeout_minutes: 10\n"
        "stages:\n  - {name: train, task: train.yaml}\n"
    ),
    "train.yaml": "resources: {cpus: 1}\nrun: echo '::metric accuracy=0.9'\n",
}


async def waiting(control: RunControl, run_id: str) -> RunProgress:
    async def poll() -> RunProgress:
        while True:
            progress = await control.progress(run_id)
            if progress is not None and progress.state is RunState.AWAITING_APPROVAL:
                return progress
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 60)


async def test_a_run_above_its_budget_waits_launching_nothing_until_approved(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    # 1 CPU at $1/h for the worst case of 10 minutes: $0.17 estimated; the limit is $1.
    settings = make_settings(SKYRUN_CPU_HOUR_USD="12")  # $2 estimated: above it
    async with running_workers(build_workers(client, settings)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(git_repo(FILES)))
        progress = await waiting(control, outcome.run_id)

        assert progress.approval is not None
        assert progress.approval.reason == OVER_PIPELINE.format(estimate="$2.00", limit="$1.00")
        assert (progress.approval.estimate_usd, progress.approval.limit_usd) == (2.0, 1.0)
        assert progress.approval.expires_at
        assert [s.state for s in progress.stages] == [StageState.PENDING]
        assert progress.clusters == [] and clusters_left(settings) == []
        await asyncio.sleep(0.5)  # and it stays so
        assert clusters_left(settings) == []

        assert await control.approve(outcome.run_id, "maria", via="cli") == ""
        done = await wait_finished(control, outcome.run_id)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.approval is not None and done.approval.approved_by == "maria"
        assert done.metrics == {"accuracy": 0.9}
        refused = await control.approve(outcome.run_id, "maria")
        assert refused == NOT_WAITING.format(run_id=outcome.run_id, state="succeeded")


async def test_an_unapproved_run_ends_cancelled_when_its_time_runs_out(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    settings = make_settings(SKYRUN_CPU_HOUR_USD="12", SKYRUN_APPROVAL_TIMEOUT_S="2")
    async with running_workers(build_workers(client, settings)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(git_repo(FILES)))
        await waiting(control, outcome.run_id)
        done = await wait_finished(control, outcome.run_id)

    assert done.state is RunState.CANCELLED
    assert done.error == EXPIRED.format(
        hours=2 / 3600, reason=OVER_PIPELINE.format(estimate="$2.00", limit="$1.00")
    )
    assert [s.state for s in done.stages] == [StageState.SKIPPED]
    assert clusters_left(settings) == []


@pytest.mark.parametrize("value", ["-5", "nan", "a lot"])
def test_bad_approval_limits_are_refused_at_startup(
    make_settings: Callable[..., Settings], value: str
) -> None:
    with pytest.raises(ValueError, match="SKYRUN_APPROVAL_USD"):
        make_settings(SKYRUN_APPROVAL_USD=value)
