"""Concurrency caps with a queue: the repository's `concurrency` and SKYRUN_MAX_CONCURRENT_RUNS on
a real Temporal dev server with real workers and the local backend. Jobs write when they compute
(tests/queueing.py), so "never two at once" is read from what the jobs did, not from skyrun."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.queueing import (
    most_at_once,
    open_gate,
    spans,
    stamped_pipeline,
    wait_computing,
    wait_progress,
    wait_queued,
    worker_process,
)
from tests.runs import clusters_left, head, request_for, wait_finished
from worker.capacity import (
    POOL_DEPLOYMENT,
    POOL_REPOSITORY,
    ordinal,
    place,
    queued_line,
    queued_title,
    run_label,
)
from worker.contract import RunProgress, RunRequest, RunState, Trigger, lane_for_branch
from worker.devserver import dev_server
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings


def test_ordinals() -> None:
    words = [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112)]
    assert words == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "23rd",
        "101st",
        "111th",
        "112th",
    ]


def test_a_place_in_line_names_the_run_just_ahead() -> None:
    assert place(None, "") == ""
    assert place(1, "") == "next in line"
    assert place(2, "acme/models#41") == "2nd in line, behind acme/models#41"
    assert run_label("acme/models", 41, "models-1") == "acme/models#41"
    assert run_label("acme/models", None, "models-1") == "models-1"


def test_the_queued_line_says_which_cap_the_run_waits_for() -> None:
    progress = RunProgress("r", "acme/models", "main", "", Trigger.CLI, "me")
    assert queued_line(progress) == "" and queued_title(progress) == ""
    progress.queue_position, progress.queue_ahead = 3, "acme/models#7"
    progress.queue_pool, progress.queue_capacity = POOL_REPOSITORY, 2
    assert queued_line(progress) == (
        "⏳ Queued: 3rd in line, behind acme/models#7. acme/models runs at most 2 at once "
        "(`concurrency` in .skyrun.yaml)."
    )
    assert queued_title(progress) == "Queued: 3rd in line, behind acme/models#7"
    progress.queue_pool = POOL_DEPLOYMENT
    assert "SKYRUN_MAX_CONCURRENT_RUNS" in queued_line(progress)


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    path = tmp_path / "stamps"
    path.mkdir()
    return path


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    path = tmp_path / "gates"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def settings(make_settings: Callable[..., Settings], stamps: Path, gates: Path) -> Settings:
    """Jobs may write their stamps (read-write) and see their gates (read-only)."""
    return make_settings(SKYRUN_LOCAL_MOUNTS=f"{gates},{stamps}:rw")


@contextlib.asynccontextmanager
async def controlling(client: Client, settings: Settings) -> AsyncIterator[RunControl]:
    async with running_workers(build_workers(client, settings)):
        yield RunControl(client, settings.temporal_task_queue)


def lane_request(repo: Path, branch: str, at: int, **fields: object) -> RunRequest:
    """A run of `repo`'s head in the lane of `branch`, requested at `at` (ordering the queue)."""
    return request_for(
        repo,
        commit=head(repo),
        ref=branch,
        lane=lane_for_branch(str(repo), branch),
        requested_at=at,
        **fields,
    )


async def start(control: RunControl, *requests: RunRequest) -> list[str]:
    """Start every request at once; their run ids in the order given."""
    outcomes = await asyncio.gather(*(control.start(request) for request in requests))
    assert all(outcome.started for outcome in outcomes)
    return [outcome.run_id for outcome in outcomes]


async def test_the_deployment_cap_holds_across_repositories(
    client: Client,
    make_settings: Callable[..., Settings],
    git_repo: Callable[..., Path],
    stamps: Path,
    gates: Path,
) -> None:
    settings = make_settings(
        SKYRUN_LOCAL_MOUNTS=f"{gates},{stamps}:rw", SKYRUN_MAX_CONCURRENT_RUNS="1"
    )
    one = git_repo(stamped_pipeline(stamps, gates), name="one")
    two = git_repo(stamped_pipeline(stamps, gates), name="two")
    async with controlling(client, settings) as control:
        (first,) = await start(control, lane_request(one, "a", 100))
        await wait_computing(control, first, stamps)
        # Reaching the pool in either order, they wait in the order they were requested.
        third, second = await start(
            control, lane_request(one, "b", 300), lane_request(two, "a", 200)
        )
        queued = await wait_queued(control, second, 1)
        assert queued.queue_pool == POOL_DEPLOYMENT and queued.queue_capacity == 1
        assert queued.stages[0].state.value == "pending"  # shown, not started
        await wait_queued(control, third, 2, ahead=second)
        (summary,) = [s for s in await control.list_runs(repo=str(two)) if s.run_id == second]
        assert summary.state is RunState.QUEUED

        open_gate(gates, first)
        await wait_computing(control, second, stamps)
        await wait_queued(control, third, 1)
        open_gate(gates, "all")
        runs = [await wait_finished(control, run_id) for run_id in (first, second, third)]
    assert [run.state for run in runs] == [RunState.SUCCEEDED] * 3, [r.error for r in runs]
    assert all(run.queue_position is None for run in runs)
    assert [span.run_id for span in spans(stamps)] == [first, second, third]
    assert most_at_once(stamps) == 1


async def test_cancelling_a_queued_run_takes_it_out_of_line(
    control: RunControl,
    git_repo: Callable[..., Path],
    stamps: Path,
    gates: Path,
    settings: Settings,
) -> None:
    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=1))
    (first,) = await start(control, lane_request(repo, "a", 100))
    await wait_computing(control, first, stamps)
    third, second = await start(control, lane_request(repo, "c", 300), lane_request(repo, "b", 200))
    queued = await wait_queued(control, second, 1)
    assert queued.queue_pool == POOL_REPOSITORY
    await wait_queued(control, third, 2, ahead=second)

    assert await control.cancel(second)
    cancelled = await wait_finished(control, second)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.queue_position is None
    await wait_queued(control, third, 1)  # moved up
    assert not (stamps / second).exists()  # never computed
    assert not [name for name in clusters_left(settings) if second in name]

    open_gate(gates, "all")
    for run_id in (first, third):
        assert (await wait_finished(control, run_id)).state is RunState.SUCCEEDED
    assert [span.run_id for span in spans(stamps)] == [first, third]


async def test_a_queued_run_superseded_in_its_lane_leaves_the_queue(
    control: RunControl, git_repo: Callable[..., Path], stamps: Path, gates: Path
) -> None:
    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=1))
    (first,) = await start(control, lane_request(repo, "a", 100))
    await wait_computing(control, first, stamps)
    third, second = await start(control, lane_request(repo, "c", 300), lane_request(repo, "b", 200))
    await wait_queued(control, third, 2, ahead=second)

    repo = git_repo({"more.txt": "a newer commit of lane b"})
    (newer,) = await start(control, lane_request(repo, "b", 400))
    superseded = await wait_finished(control, second)
    assert superseded.state is RunState.CANCELLED
    assert f"superseded by run {newer}" in superseded.error
    await wait_queued(control, third, 1)
    await wait_queued(control, newer, 2, ahead=third)

    open_gate(gates, "all")
    for run_id in (first, third, newer):
        assert (await wait_finished(control, run_id)).state is RunState.SUCCEEDED
    assert [span.run_id for span in spans(stamps)] == [first, third, newer]
    assert most_at_once(stamps) == 1


async def test_the_newest_requests_capacity_is_the_pools(
    control: RunControl, git_repo: Callable[..., Path], stamps: Path, gates: Path
) -> None:
    """`concurrency: 1` at one commit, `2` at a later one: the later request's cap wins, and
    whoever waits is admitted as soon as it applies."""
    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=1))
    (first,) = await start(control, lane_request(repo, "a", 100))
    await wait_computing(control, first, stamps)
    (second,) = await start(control, lane_request(repo, "b", 200))
    await wait_queued(control, second, 1)

    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=2))
    (third,) = await start(control, lane_request(repo, "c", 300))
    await wait_computing(control, second, stamps)  # while the first still computes
    queued = await wait_queued(control, third, 1)
    assert queued.queue_capacity == 2

    # An older commit's cap entering later does not take the pool back to 1.
    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=1))
    (fourth,) = await start(control, lane_request(repo, "d", 250))
    await wait_queued(control, fourth, 1)  # requested before the third: ahead of it
    await wait_queued(control, third, 2, ahead=fourth)
    open_gate(gates, first)
    await wait_computing(control, fourth, stamps)
    progress = await wait_progress(control, third, lambda p: p.queue_position == 1)
    assert progress.queue_capacity == 2
    open_gate(gates, "all")
    for run_id in (first, second, third, fourth):
        assert (await wait_finished(control, run_id)).state is RunState.SUCCEEDED
    assert most_at_once(stamps) == 2


async def test_the_queue_survives_a_killed_worker(
    client: Client, settings: Settings, git_repo: Callable[..., Path], stamps: Path, gates: Path
) -> None:
    """Places in line live in the runs' and the pool's histories: a worker SIGKILLed while one
    run computes and two wait is replaced, and the queue goes on in order."""
    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=1))
    control = RunControl(client, settings.temporal_task_queue)
    worker = await worker_process(settings)
    try:
        (first,) = await start(control, lane_request(repo, "a", 100))
        await wait_computing(control, first, stamps, timeout=120)
        third, second = await start(
            control, lane_request(repo, "c", 300), lane_request(repo, "b", 200)
        )
        await wait_queued(control, second, 1)
        await wait_queued(control, third, 2, ahead=second)
        worker.send_signal(signal.SIGKILL)
        await worker.wait()

        worker = await worker_process(settings)
        # Answered by the new worker, from history: the places are still known.
        await wait_queued(control, second, 1)
        await wait_queued(control, third, 2, ahead=second)
        open_gate(gates, "all")
        runs = [await wait_finished(control, r, timeout=180) for r in (first, second, third)]
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), 60)
    assert [run.state for run in runs] == [RunState.SUCCEEDED] * 3, [r.error for r in runs]
    assert [span.run_id for span in spans(stamps)] == [first, second, third]
    assert most_at_once(stamps) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_queue_survives_a_temporal_restart(
    make_settings: Callable[..., Settings],
    git_repo: Callable[..., Path],
    stamps: Path,
    gates: Path,
    tmp_path: Path,
) -> None:
    """A dev server of its own (SQLite file under the data dir), stopped and started again on the
    same database while one run computes and two wait; the workers reconnect by themselves."""
    port = free_port()
    settings = make_settings(
        SKYRUN_LOCAL_MOUNTS=f"{gates},{stamps}:rw",
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        SKYRUN_TEMPORAL_PORT=str(port),
        SKYRUN_TEMPORAL_UI_PORT=str(free_port()),
        SKYRUN_DATA_DIR=tmp_path / "own-temporal",
    )
    repo = git_repo(stamped_pipeline(stamps, gates, concurrency=1))
    server = dev_server(settings)
    client = await server.__aenter__()
    up = True
    try:
        async with running_workers(build_workers(client, settings)):
            control = RunControl(client, settings.temporal_task_queue)
            (first,) = await start(control, lane_request(repo, "a", 100))
            await wait_computing(control, first, stamps, timeout=120)
            third, second = await start(
                control, lane_request(repo, "c", 300), lane_request(repo, "b", 200)
            )
            await wait_queued(control, second, 1)
            await wait_queued(control, third, 2, ahead=second)

            up = False
            await server.__aexit__(None, None, None)  # SIGTERM; the database file stays
            server = dev_server(settings)
            await server.__aenter__()  # same port, same database
            up = True
            # The workers' and this client's connections come back by themselves.
            await wait_queued(control, second, 1, timeout=120)
            await wait_queued(control, third, 2, ahead=second)
            open_gate(gates, "all")
            runs = [await wait_finished(control, r, timeout=180) for r in (first, second, third)]
    finally:
        if up:
            await server.__aexit__(None, None, None)
    assert [run.state for run in runs] == [RunState.SUCCEEDED] * 3, [r.error for r in runs]
    assert [span.run_id for span in spans(stamps)] == [first, second, third]
    assert most_at_once(stamps) == 1
