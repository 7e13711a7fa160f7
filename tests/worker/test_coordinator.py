"""One run per lane, however close together the requests come: the lane coordinator on a real
Temporal dev server with real workers and the local backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from tests.runs import head, request_for, wait_finished, wait_stage_running
from worker.contract import (
    DEFAULT_BRANCH,
    RunProgress,
    RunRequest,
    RunState,
    StageState,
    Trigger,
    lane_for_branch,
)
from worker.coordinator import (
    COORDINATOR_WORKFLOW,
    QUERY_MEMBERS,
    SIGNAL_ADMITTED,
    SIGNAL_LEAVE,
    SIGNAL_POSITION,
    CoordinatorActivities,
    CoordinatorState,
    CoordinatorWorkflow,
    EnterInput,
    Left,
    Members,
    Position,
    Ticket,
    lane_workflow_id,
    pool_workflow_id,
)
from worker.runcontrol import RunControl
from worker.settings import Settings

PIPELINE = "stages: [{name: train, task: train.yaml}]\n"
TRAIN = "run: |\n  echo computing {n}\n  sleep {seconds}\n  echo done {n}\n"


def commits(
    git_repo: Callable[..., Path], count: int, seconds: float = 1
) -> tuple[Path, list[str]]:
    """A repository with `count` commits, each a one-stage pipeline that computes for a while."""
    shas = []
    repo = Path()
    for n in range(count):
        repo = git_repo(
            {".skyrun.yaml": PIPELINE, "train.yaml": TRAIN.format(n=n, seconds=seconds)}
        )
        shas.append(head(repo))
    return repo, shas


def assert_one_at_a_time(runs: list[RunProgress]) -> None:
    """No two runs' compute overlaps: each run's stages start after the previous run closed."""
    computed = sorted(
        (run for run in runs if any(stage.started_at for stage in run.stages)),
        key=lambda run: min(stage.started_at for stage in run.stages if stage.started_at),
    )
    for earlier, later in itertools.pairwise(computed):
        first_stage = min(stage.started_at for stage in later.stages if stage.started_at)
        assert first_stage >= earlier.finished_at, (earlier.run_id, later.run_id)


async def start_all(control: RunControl, requests: list[RunRequest], spacing_s: float) -> list[str]:
    async def start(index: int, request: RunRequest) -> str:
        await asyncio.sleep(index * spacing_s)
        outcome = await control.start(request)
        assert outcome.started
        return outcome.run_id

    return list(await asyncio.gather(*(start(i, r) for i, r in enumerate(requests))))


@pytest.mark.parametrize(("count", "spacing_s"), [(2, 0.0), (5, 0.0), (5, 0.01)])
async def test_concurrent_requests_of_one_lane_never_compute_together_and_the_newest_wins(
    control: RunControl, git_repo: Callable[..., Path], count: int, spacing_s: float
) -> None:
    repo, shas = commits(git_repo, count)
    for _round in range(2):
        requests = [request_for(repo, commit=sha, envs={"ROUND": str(_round)}) for sha in shas]
        run_ids = await start_all(control, requests, spacing_s)
        runs = [await wait_finished(control, run_id) for run_id in run_ids]

        newest = max(range(count), key=lambda i: requests[i].requested_at)
        assert runs[newest].state is RunState.SUCCEEDED, runs[newest].error
        for i, run in enumerate(runs):
            if i != newest:
                assert run.state is RunState.CANCELLED, (run.state, run.error)
                assert "superseded by run" in run.error
        assert_one_at_a_time(runs)


async def test_a_push_and_a_slack_command_for_one_branch_at_once(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo, (push_sha, slack_sha) = commits(git_repo, 2)
    push = request_for(repo, commit=push_sha, trigger=Trigger.PUSH)
    slack = request_for(repo, commit=slack_sha, trigger=Trigger.SLACK, delivery_id="slack:t1")
    run_ids = await start_all(control, [push, slack], 0)
    runs = [await wait_finished(control, run_id) for run_id in run_ids]
    states = sorted(run.state.value for run in runs)
    assert states == [RunState.CANCELLED.value, RunState.SUCCEEDED.value]
    winner = runs[0] if push.requested_at > slack.requested_at else runs[1]
    assert winner.state is RunState.SUCCEEDED
    assert_one_at_a_time(runs)


async def test_a_request_older_than_the_running_one_never_computes(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo, (old_sha, new_sha) = commits(git_repo, 2, seconds=2)
    old = request_for(repo, commit=old_sha)
    new = request_for(repo, commit=new_sha)
    old.requested_at = 1  # received long ago, but its run reaches the lane last
    started = await control.start(new)
    await wait_stage_running(control, started.run_id, "train")
    stale = await control.start(old)

    stale_run = await wait_finished(control, stale.run_id)
    assert stale_run.state is RunState.CANCELLED
    assert f"superseded by run {started.run_id}" in stale_run.error
    assert stale_run.stages == []
    new_run = await wait_finished(control, started.run_id)
    assert new_run.state is RunState.SUCCEEDED


async def test_cancelling_a_lane_stops_the_running_and_the_queued_runs(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo, (first_sha, second_sha) = commits(git_repo, 2, seconds=60)
    first = await control.start(request_for(repo, commit=first_sha))
    await wait_stage_running(control, first.run_id, "train")
    # Received before the lane is cancelled, though its run enters the lane only afterwards.
    late = request_for(repo, commit=second_sha)
    late.requested_at = 2

    lane = late.lane
    assert await control.cancel_lane(lane, "the pull request was closed") == [first.run_id]
    late_run = await control.start(late)
    for run_id in (first.run_id, late_run.run_id):
        run = await wait_finished(control, run_id)
        assert run.state is RunState.CANCELLED
        assert "the pull request was closed" in run.error
    assert await control.lane_members(lane) == []


STUBBORN = "run: |\n  trap 'echo ignoring TERM' TERM\n  for i in $(seq 600); do sleep 0.1; done\n"


async def test_a_holder_that_vanished_without_leaving_is_noticed(
    client: Client, control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({".skyrun.yaml": PIPELINE, "train.yaml": STUBBORN})
    first_request = request_for(repo, commit=head(repo))
    repo, (second_sha,) = commits(git_repo, 1)
    lane = first_request.lane
    # A coordinator that checks its members every second instead of every two minutes.
    await client.start_workflow(
        COORDINATOR_WORKFLOW,
        CoordinatorState(lane, check_every_s=1),
        id=lane_workflow_id(lane, settings.temporal_task_queue),
        task_queue=settings.temporal_task_queue,
    )
    first = await control.start(first_request)
    await wait_stage_running(control, first.run_id, "train")
    second = await control.start(request_for(repo, commit=second_sha))
    # Once the lane has asked the first run to stop (its job ignores SIGTERM for the grace
    # period), an operator terminates it: it never tears down or leaves the lane by itself.
    while await control.lane_members(lane) != [first.run_id, second.run_id]:
        await asyncio.sleep(0.05)
    await client.get_workflow_handle(first.run_id).terminate("by hand")

    run = await wait_finished(control, second.run_id, timeout=60)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].state is StageState.SUCCEEDED


async def test_the_same_work_requested_again_after_it_finished_runs_again(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    """Its run id is reused (same work), so the lane must tell the two executions apart."""
    repo, _ = commits(git_repo, 1, seconds=0)
    first = await control.start(request_for(repo))
    assert (await wait_finished(control, first.run_id)).state is RunState.SUCCEEDED
    again = await control.start(request_for(repo))
    assert again.run_id == first.run_id and again.started
    assert (await wait_finished(control, again.run_id, timeout=60)).state is RunState.SUCCEEDED


@workflow.defn(name="TestPoolMember")
class PoolMember:
    """A stand-in run: enters a pool and, once admitted, computes until the test releases it."""

    def __init__(self) -> None:
        self.admitted = False
        self.released = False

    @workflow.signal(name=SIGNAL_ADMITTED)
    def admit(self, coordinator: str) -> None:
        self.admitted = True

    @workflow.signal(name="release")
    def release(self) -> None:
        self.released = True

    @workflow.query(name="admitted")
    def is_admitted(self) -> bool:
        return self.admitted

    @workflow.run
    async def run(self, pool: str, capacity: int, requested_at: int) -> None:
        info = workflow.info()
        coordinator = pool_workflow_id(pool, info.task_queue)
        await workflow.execute_activity_method(
            CoordinatorActivities.enter,
            EnterInput(
                coordinator,
                CoordinatorState(pool, capacity=capacity, newest_wins=False),
                Ticket(info.workflow_id, info.run_id, requested_at),
                info.task_queue,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )
        await workflow.wait_condition(lambda: self.admitted)
        await workflow.wait_condition(lambda: self.released)
        await workflow.get_external_workflow_handle(coordinator).signal(
            SIGNAL_LEAVE, Left(info.workflow_id, info.run_id)
        )


async def test_a_pool_admits_at_most_its_capacity_first_come_first_served(
    client: Client, task_queue: str
) -> None:
    """The same coordinator, as a capacity pool (what concurrency caps build on)."""
    pool = f"pool-{task_queue}"
    coordinator = client.get_workflow_handle(pool_workflow_id(pool, task_queue))

    async def members() -> Members:
        members: Members = await coordinator.query(QUERY_MEMBERS, result_type=Members)
        return members

    async def until(predicate: Callable[[Members], bool]) -> Members:
        for _ in range(300):
            with contextlib.suppress(RPCError):
                now = await members()
                if predicate(now):
                    return now
            await asyncio.sleep(0.1)
        raise AssertionError(await members())

    def member(name: str, requested_at: int) -> Awaitable[WorkflowHandle[Any, Any]]:
        return client.start_workflow(
            PoolMember.run, args=[pool, 2, requested_at], id=f"{pool}-{name}", task_queue=task_queue
        )

    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[CoordinatorWorkflow, PoolMember],
        activities=[CoordinatorActivities(client).enter],
    ):
        first, second = await member("a", 100), await member("b", 101)
        await until(lambda m: len(m.holders) == 2)
        # Three more, requested in the order c, d, e but reaching the pool in the reverse one.
        late = {name: at for name, at in (("c", 200), ("d", 201), ("e", 202))}
        handles = {name: await member(name, late[name]) for name in ("e", "d", "c")}
        waiting = await until(lambda m: len(m.waiting) == 3)
        assert waiting.waiting == [f"{pool}-c", f"{pool}-d", f"{pool}-e"]
        assert sorted(waiting.holders) == [f"{pool}-a", f"{pool}-b"]

        await first.signal("release")
        after = await until(lambda m: f"{pool}-a" not in m.holders and len(m.holders) == 2)
        assert after.holders == [f"{pool}-b", f"{pool}-c"]
        assert after.waiting == [f"{pool}-d", f"{pool}-e"]
        for handle in (second, *handles.values()):
            await handle.signal("release")
        for handle in (first, second, *handles.values()):
            await handle.result()


async def test_a_request_naming_no_branch_shares_the_default_branchs_lane(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    """`/skyrun OWNER/REPO` in Slack (no @REF) and a push to the default branch, at once."""
    repo, (push_sha, _) = commits(git_repo, 2)
    push = request_for(repo, commit=push_sha, trigger=Trigger.PUSH)
    slack = request_for(
        repo,
        ref="",
        trigger=Trigger.SLACK,
        delivery_id="slack:t2",
        lane=lane_for_branch(str(repo), DEFAULT_BRANCH),
    )
    run_ids = await start_all(control, [push, slack], 0)
    runs = [await wait_finished(control, run_id) for run_id in run_ids]
    assert sorted(run.state.value for run in runs) == ["cancelled", "succeeded"]
    assert_one_at_a_time(runs)
    assert runs[1].ref == "main"  # the Slack run learned the branch it runs on
    (summary,) = [s for s in await control.list_runs(repo=str(repo)) if s.run_id == run_ids[1]]
    assert summary.ref == "main"


# --- places in line (concurrency caps) ---------------------------------------------------------


@workflow.defn(name="TestQueueMember")
class QueueMember:
    """A stand-in run of a capacity pool that records every place in line it is told, and can be
    told to give up while it waits (as a cancelled or superseded run leaves)."""

    def __init__(self) -> None:
        self.admitted = False
        self.released = False
        self.quit = False
        self.places: list[tuple[int, str, int]] = []

    @workflow.signal(name=SIGNAL_ADMITTED)
    def admit(self, coordinator: str) -> None:
        self.admitted = True

    @workflow.signal(name=SIGNAL_POSITION)
    def position(self, place: Position) -> None:
        self.places.append((place.position, place.ahead, place.capacity))

    @workflow.signal(name="release")
    def release(self) -> None:
        self.released = True

    @workflow.signal(name="quit")
    def give_up(self) -> None:
        self.quit = True

    @workflow.query(name="places")
    def told(self) -> list[tuple[int, str, int]]:
        return self.places

    @workflow.run
    async def run(self, pool: str, capacity: int, requested_at: int, label: str) -> None:
        info = workflow.info()
        coordinator = pool_workflow_id(pool, info.task_queue)
        await workflow.execute_activity_method(
            CoordinatorActivities.enter,
            EnterInput(
                coordinator,
                CoordinatorState(pool, capacity=capacity, newest_wins=False),
                Ticket(info.workflow_id, info.run_id, requested_at, label, capacity),
                info.task_queue,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )
        await workflow.wait_condition(lambda: self.admitted or self.quit)
        if self.admitted:
            await workflow.wait_condition(lambda: self.released)
        await workflow.get_external_workflow_handle(coordinator).signal(
            SIGNAL_LEAVE, Left(info.workflow_id, info.run_id)
        )


async def test_a_pool_tells_each_waiting_run_its_place_and_who_is_ahead(
    client: Client, task_queue: str
) -> None:
    pool = f"places-{task_queue}"
    coordinator = client.get_workflow_handle(pool_workflow_id(pool, task_queue))

    def member(name: str, requested_at: int) -> Awaitable[WorkflowHandle[Any, Any]]:
        return client.start_workflow(
            QueueMember.run,
            args=[pool, 1, requested_at, f"acme/models#{requested_at}"],
            id=f"{pool}-{name}",
            task_queue=task_queue,
        )

    async def places(handle: WorkflowHandle[Any, Any]) -> list[list[Any]]:
        told: list[list[Any]] = await handle.query("places", result_type=list[list[Any]])
        return told

    async def until(check: Callable[[], Awaitable[bool]]) -> None:
        for _ in range(300):
            with contextlib.suppress(RPCError):
                if await check():
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(await coordinator.query(QUERY_MEMBERS, result_type=Members))

    async def told(handle: WorkflowHandle[Any, Any], *expected: list[Any]) -> None:
        async def check() -> bool:
            return (await places(handle))[-len(expected) :] == list(expected)

        await until(check)

    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[CoordinatorWorkflow, QueueMember],
        activities=[CoordinatorActivities(client).enter, CoordinatorActivities(client).closed_runs],
    ):
        holder = await member("a", 1)

        async def holding() -> bool:
            members: Members = await coordinator.query(QUERY_MEMBERS, result_type=Members)
            return members.holders == [f"{pool}-a"]

        await until(holding)
        b, c, d, e = [await member(name, at) for name, at in zip("bcde", (2, 3, 4, 5), strict=True)]
        await told(b, [1, "", 1])
        await told(c, [2, "acme/models#2", 1])
        await told(d, [3, "acme/models#3", 1])
        await told(e, [4, "acme/models#4", 1])
        assert await places(holder) == []  # admitted at once: never queued

        await b.signal("quit")  # leaves while it waits (cancelled, superseded)
        await b.result()
        await told(c, [1, "", 1])
        await told(d, [2, "acme/models#3", 1])
        await told(e, [3, "acme/models#4", 1])

        # d vanishes while it waits (terminated): it never leaves by itself.
        await d.terminate("by hand")
        await holder.signal("release")
        await holder.result()

        async def moved_on() -> bool:
            members: Members = await coordinator.query(QUERY_MEMBERS, result_type=Members)
            return members.holders == [f"{pool}-c"] and members.waiting == [f"{pool}-e"]

        await until(moved_on)
        await told(e, [1, "", 1])
        for handle in (c, e):
            await handle.signal("release")
        await c.result()
        await e.result()
