"""The worker-start reaper: clusters and checkouts of runs that are over go, running runs' stay."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.worker.test_workflow import alive
from worker.backends.base import cluster_name_for
from worker.backends.local import JOB_RECORD, list_clusters
from worker.contract import WORKFLOW_NAME
from worker.reaper import belongs_to_any, reap, running_run_ids

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
