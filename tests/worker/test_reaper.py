"""The worker-start reaper: clusters and checkouts of runs that are over go, running runs' stay."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.deploy.processes import fleet
from tests.runs import alive, request_for, wait_finished
from worker.backends.base import TaskRun, cluster_name_for
from worker.backends.local import JOB_RECORD, LocalBackend, list_clusters
from worker.contract import WORKFLOW_NAME, RunState
from worker.reaper import belongs_to_any, reap, running_run_ids
from worker.runcontrol import RunControl

SLOW = "run: |\n  echo slow stage started\n  sleep 300\n"

OLD = 3600.0


@pytest.fixture
async def running_run(client: Client, task_queue: str) -> AsyncIterator[str]:
    """A pipeline run that stays running (no worker polls its queue)."""
    run_id = f"reaper-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(WORKFLOW_NAME, {}, id=run_id, task_queue=task_queue)
    for _ in range(100):
        if run_id in await running_run_ids(client):
            break
        await asyncio.sleep(0.1)
    yield run_id
    await handle.terminate("test over")


def make_dir(path: Path, age_s: float, files: dict[str, str] | None = None) -> None:
    path.mkdir(parents=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    stamp = path.stat().st_mtime - age_s
    os.utime(path, (stamp, stamp))


async def test_reaps_what_runs_that_are_over_left_and_nothing_else(
    client: Client, running_run: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    clusters = data / "clusters"
    keep = cluster_name_for(running_run, "train")
    gone = cluster_name_for("finished-run-0123456789", "train")
    fresh = cluster_name_for("run-not-listed-yet", "train")
    # The terminated run's job still runs (as after a SIGKILLed worker): it is killed first.
    sleeper = await asyncio.create_subprocess_exec(
        "sleep", "300", start_new_session=True, env={**os.environ, "SKYRUN_JOB_TOKEN": "t0k"}
    )
    make_dir(clusters / gone, OLD, {JOB_RECORD: f"{sleeper.pid} t0k\n"})
    make_dir(clusters / keep, OLD)
    make_dir(clusters / fresh, 1.0)
    make_dir(data / "checkouts" / running_run, OLD)
    make_dir(data / "checkouts" / "finished-run-0123456789", OLD)

    removed = await reap(client, data)

    assert sorted(removed) == [
        "checkout finished-run-0123456789",
        f"cluster {gone}",
    ]
    assert list_clusters(clusters) == sorted([keep, fresh])
    assert (data / "checkouts" / running_run).is_dir()
    assert await asyncio.wait_for(sleeper.wait(), 10) == -9
    assert not alive(sleeper.pid)


def test_cluster_names_cut_at_60_characters_still_belong_to_their_run() -> None:
    run_id = "a-very-long-repository-name-for-testing-the-cut-" + "0123456789"
    name = cluster_name_for(run_id, "train")
    assert len(name) == 60
    assert belongs_to_any(name, [run_id])
    assert not belongs_to_any(name, ["another-run"])
    assert belongs_to_any(cluster_name_for("Repo_X-1", "A.B"), ["Repo_X-1"])


async def started_run(client: Client, task_queue: str, run_id: str) -> None:
    await client.start_workflow(WORKFLOW_NAME, {}, id=run_id, task_queue=task_queue)


async def test_a_closed_runs_cluster_goes_at_once_and_its_stage_log_says_so(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """No age rule for a recorded cluster: Temporal's describe says whether its run is over."""
    data = tmp_path / "data"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    backend = LocalBackend(data / "clusters")
    over, sibling = (f"reaper-{name}-{uuid.uuid4().hex[:8]}" for name in ("over", "sibling"))
    for run_id in (over, sibling):
        await started_run(client, task_queue, run_id)
        run = TaskRun(
            run_id,
            "train",
            cluster_name_for(run_id, "train"),
            "run: echo ok\n",
            {},
            checkout,
            launch=True,
        )
        with (tmp_path / f"{run_id}.log").open("ab") as log:
            assert await backend.run(run, log) == 0
        make_dir(data / "checkouts" / run_id, 0.0)
    await client.get_workflow_handle(over).terminate("gone")
    logs = tmp_path / "logs"

    removed = await reap(client, data, logs_dir=logs, worker="worker-7")

    # Both are seconds old: the one whose run is over goes, the live sibling's stays.
    assert sorted(removed) == [f"checkout {over}", f"cluster {cluster_name_for(over, 'train')}"]
    assert list_clusters(data / "clusters") == [cluster_name_for(sibling, "train")]
    assert (data / "checkouts" / sibling).is_dir()
    note = (logs / over / "train.log").read_text()
    assert note.startswith(f"[skyrun] cluster {cluster_name_for(over, 'train')} was removed")
    assert "when worker worker-7 started again at " in note and "(terminated)" in note
    assert not (logs / sibling).exists()
    await client.get_workflow_handle(sibling).terminate("test over")


async def test_a_sigkilled_worker_that_comes_back_removes_its_cluster_within_seconds(
    client: Client, task_queue: str, tmp_path: Path, git_repo: Callable[..., Path]
) -> None:
    gone_s = 5
    repo = git_repo({"t.yaml": SLOW, ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n"})
    target = client.service_client.config.target_host
    async with fleet(
        tmp_path / "fleet", target, task_queue, SKYRUN_WORKER_GONE_SECONDS=str(gone_s)
    ) as processes:
        data = {n: tmp_path / f"data-{n}" for n in (1, 2)}
        workers = {n: await processes.worker(f"worker-{n}", data[n], n) for n in (1, 2)}
        control = RunControl(client, task_queue)
        outcome = await control.start(request_for(repo))
        log_path = processes.log_dir / outcome.run_id / "t.log"
        for _ in range(600):
            if log_path.exists() and "slow stage started" in log_path.read_text():
                break
            await asyncio.sleep(0.1)
        victim = next(n for n in (1, 2) if list_clusters(data[n] / "clusters"))
        await processes.stop(workers[victim], signal.SIGKILL)

        progress = await wait_finished(control, outcome.run_id, timeout=120)
        assert progress.state is RunState.FAILED
        assert f"did not come back within {gone_s} s" in progress.error
        (left,) = list_clusters(data[victim] / "clusters")

        started = time.monotonic()
        back = await processes.worker("worker-back", data[victim], victim)
        while list_clusters(data[victim] / "clusters"):
            assert time.monotonic() - started < 10, back.output()
            await asyncio.sleep(0.1)
        assert not (data[victim] / "checkouts" / outcome.run_id).exists()
        assert f"[skyrun] cluster {left} was removed when worker " in log_path.read_text()


async def test_a_cluster_its_lane_holds_warm_outlives_its_run(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """`keep_warm_minutes`: the run is over, its lane keeps the cluster for the next run."""
    data = tmp_path / "data"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    backend = LocalBackend(data / "clusters")
    run_id = f"reaper-warm-{uuid.uuid4().hex[:8]}"
    await started_run(client, task_queue, run_id)
    warm, done = cluster_name_for(run_id, "train"), cluster_name_for(run_id, "prep")
    for name in (warm, done):
        run = TaskRun(run_id, "train", name, "run: echo ok\n", {}, checkout, launch=True)
        with (tmp_path / "run.log").open("ab") as log:
            assert await backend.run(run, log) == 0
    await client.get_workflow_handle(run_id).terminate("over")

    removed = await reap(client, data, logs_dir=tmp_path / "logs", warm=[warm])

    assert removed == [f"cluster {done}"]
    assert list_clusters(data / "clusters") == [warm]
