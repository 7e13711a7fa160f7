"""The sweep workflow on a real worker (local backend, real Temporal): its runs in parallel,
each in its own lane; a failing combination; one sweep per request; cancelling the lane."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from tests.runs import clusters_left, request_for, wait_finished, wait_stage_running
from worker.contract import RunState
from worker.runcontrol import RunControl
from worker.settings import Settings
from worker.sweepspec import (
    QUERY_SWEEP,
    SweepAxis,
    SweepRequest,
    SweepStatus,
    SweepTooLarge,
    child_id,
)

PIPELINE = ".skyrun.yaml"
SLOW = "run: |\n  echo started\n  sleep 300\n"


def files(task: str) -> dict[str, str]:
    return {PIPELINE: "stages: [{name: t, task: t.yaml}]\n", "t.yaml": task}


async def over(client: Client, sweep_id: str) -> SweepStatus:
    handle = client.get_workflow_handle(sweep_id)
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 120)
    status: SweepStatus = await handle.query(QUERY_SWEEP, result_type=SweepStatus)
    return status


async def test_a_failing_combination_fails_alone(
    control: RunControl, client: Client, git_repo: Callable[..., Path], settings: Settings
) -> None:
    repo = git_repo(files('run: |\n  echo "::metric x=$A"\n  [ "$A" != 2 ]\n'))
    request = SweepRequest(request_for(repo), [SweepAxis("A", ["1", "2", "3"])])

    outcome = await control.start_sweep(request, settings.max_sweep)
    status = await over(client, outcome.run_id)

    assert outcome.started
    assert status.state is RunState.FAILED
    assert sorted(status.finished) == sorted(status.run_ids)
    states = [(await wait_finished(control, run_id)).state for run_id in status.run_ids]
    assert states == [RunState.SUCCEEDED, RunState.FAILED, RunState.SUCCEEDED]
    assert clusters_left(settings) == []


async def test_the_same_request_starts_one_sweep_and_too_large_starts_none(
    control: RunControl, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(files("run: echo hi\n"))
    request = SweepRequest(request_for(repo, delivery_id="cli-1"), [SweepAxis("A", ["1", "2"])])

    first = await control.start_sweep(request, 2)
    again = await control.start_sweep(request, 2)
    with pytest.raises(SweepTooLarge, match="this sweep would start 2 runs; SKYRUN_MAX_SWEEP is 1"):
        await control.start_sweep(
            SweepRequest(request_for(repo, delivery_id="cli-2"), [SweepAxis("A", ["1", "2"])]), 1
        )
    status = await over(client, first.run_id)

    assert first.started and not again.started and again.run_id == first.run_id
    assert status.state is RunState.SUCCEEDED and len(status.run_ids) == 2
    assert not await control.cancel(first.run_id)


async def test_sweep_runs_never_supersede_each_other_or_the_lane_and_the_lane_cancels_all(
    control: RunControl, client: Client, git_repo: Callable[..., Path], settings: Settings
) -> None:
    repo = git_repo(files(SLOW))
    sweep = await control.start_sweep(
        SweepRequest(request_for(repo), [SweepAxis("A", ["1", "2"])]), settings.max_sweep
    )
    runs = [child_id(sweep.run_id, index) for index in range(2)]
    for run_id in runs:
        await wait_stage_running(control, run_id, "t")
    plain = await control.start(request_for(repo, delivery_id="plain"))
    await wait_stage_running(control, plain.run_id, "t")
    for run_id in runs:  # still running alongside the lane's own run
        progress = await control.progress(run_id)
        assert progress is not None and progress.state is RunState.RUNNING

    cancelled = await control.cancel_lane(request_for(repo).lane, "stop everything")
    status = await over(client, sweep.run_id)

    assert plain.run_id in cancelled and sweep.run_id in cancelled
    assert status.state is RunState.CANCELLED
    assert status.error == "the sweep was cancelled: stop everything"
    for run_id in [*runs, plain.run_id]:
        assert (await wait_finished(control, run_id)).state is RunState.CANCELLED
    assert clusters_left(settings) == []


async def test_a_sweep_requested_before_the_lane_was_cancelled_never_starts_its_runs(
    control: RunControl, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(files(SLOW))
    request = request_for(repo, requested_at=time.time_ns())
    await control.cancel_lane(request.lane, "cancelled meanwhile", request.requested_at + 1)

    # The sweep enters its lane's sweeps coordinator after the order, but was asked for before.
    sweep = await control.start_sweep(SweepRequest(request, [SweepAxis("A", ["1", "2"])]), 16)
    status = await over(client, sweep.run_id)

    assert status.state is RunState.CANCELLED
    assert status.error == "the sweep was cancelled: cancelled meanwhile"
    assert status.finished == []
    for run_id in status.run_ids:
        assert await control.summary(run_id) is None  # never started
