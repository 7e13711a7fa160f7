"""`managed: true` stages as SkyPilot managed jobs on the local Slurm cluster (issue 13).

The jobs controller runs inside the session's API server, restarted in consolidation mode for
this module, which runs last (see conftest).
How far a managed job gets here depends on one thing outside skyrun: before every status check
of a job, SkyPilot's controller checks the network with HEAD requests to https://8.8.8.8 and
https://1.1.1.1 (sky/jobs/controller.py, `backend_utils.async_check_network_connection`) and
skips the check while that fails. Where it fails (a machine that reaches only package
registries), the job is launched, runs and prints, but never leaves RUNNING: SkyPilot does not
notice it ended. So the first test asserts only what holds anyway (the launch is accepted, the
job runs on a Slurm allocation and its output reaches the stage log, cancelling the run leaves no
job, cluster or Slurm job); the second, a job running to its end, is skipped there, saying why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.slurm.conftest import ApiServer, skyrun_clusters, slurm_jobs
from worker.backends.base import cluster_name_for
from worker.contract import RunRequest, RunState, StageState, Trigger, lane_for_branch
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

pytestmark = pytest.mark.slurm

RESOURCES = "resources: {infra: slurm, cpus: 1, memory: 1}\n"
PIPELINE = ".skyrun.yaml"
MANAGED_PIPELINE = "stages: [{name: train, task: train.yaml, managed: true}]\n"
START_TIMEOUT_S = 600
"""Launch request, controller start and the job cluster's provisioning (about 4 min here)."""
END_TIMEOUT_S = 300
GONE_TIMEOUT_S = 120
# ManagedJobStatus's terminal states (sky/jobs/state.py).
TERMINAL = frozenset(
    {
        "SUCCEEDED",
        "CANCELLED",
        "FAILED",
        "FAILED_SETUP",
        "FAILED_PRECHECKS",
        "FAILED_NO_RESOURCE",
        "FAILED_CONTROLLER",
    }
)
NO_NETWORK_CHECK = (
    "SkyPilot's jobs controller cannot pass its network check here ({error}): it skips every "
    "status check of a managed job (sky/jobs/controller.py), so no managed job ever ends on "
    "this machine"
)


@pytest.fixture(scope="module")
def managed_jobs_server(sky_api_server: ApiServer) -> ApiServer:
    """The session's API server, restarted with the jobs controller in it (these tests run
    last; see conftest)."""
    sky_api_server.with_managed_jobs()
    return sky_api_server


@pytest.fixture
async def control(
    client: Client, slurm_settings: Settings, managed_jobs_server: ApiServer
) -> AsyncIterator[RunControl]:
    async with running_workers(build_workers(client, slurm_settings)):
        yield RunControl(client, slurm_settings.temporal_task_queue)


def request_for(repo: Path) -> RunRequest:
    return RunRequest(
        repo=str(repo),
        clone_url=str(repo),
        ref="main",
        trigger=Trigger.CLI,
        requested_by="tester",
        lane=lane_for_branch(str(repo), "main"),
    )


def read_log(settings: Settings, run_id: str, stage: str) -> str:
    path = settings.logs_dir / run_id / f"{stage}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def managed_jobs(sky: Any, name: str) -> list[tuple[int, str]]:
    """(job id, status) of every managed job named `name` the API server knows."""
    records, *_ = sky.get(sky.jobs.queue_v2(refresh=False, name_match=name))
    return [
        (int(r.job_id), str(getattr(r.status, "value", r.status)))
        for r in records
        if r.job_name == name
    ]


def network_check_error() -> str | None:
    """Why SkyPilot's controller thinks the network is down, or None if it does not."""
    from sky.backends import backend_utils

    check: Any = backend_utils.async_check_network_connection
    try:
        asyncio.run(check())
    except Exception as exc:
        cause = exc.__cause__ or exc
        return f"{type(cause).__name__}: {str(cause)[:200]}"
    return None


async def assert_nothing_left(sky: Any, run_id: str, cluster: str) -> None:
    """No managed job of the stage still running, no cluster of the run, no Slurm job."""
    await wait_for(
        lambda: all(status in TERMINAL for _, status in managed_jobs(sky, cluster)),
        GONE_TIMEOUT_S,
        "the stage's managed job to end",
    )
    clusters = await asyncio.to_thread(skyrun_clusters, sky)
    assert [r["name"] for r in clusters if run_id in r["name"]] == []
    await wait_for(lambda: slurm_jobs(run_id) == [], GONE_TIMEOUT_S, "the run's Slurm jobs to go")


@pytest.mark.timeout(1200)
async def test_a_managed_stage_runs_as_a_managed_job_and_cancelling_it_leaves_nothing(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    sky: Any,
) -> None:
    repo = git_repo(
        {
            "train.yaml": RESOURCES + "run: |\n  echo managed job started\n  sleep 900\n",
            PIPELINE: MANAGED_PIPELINE,
        }
    )
    outcome = await control.start(request_for(repo))
    cluster = cluster_name_for(outcome.run_id, "train")
    await wait_for(
        lambda: "managed job started" in read_log(slurm_settings, outcome.run_id, "train"),
        START_TIMEOUT_S,
        "the managed job's output in the stage log",
    )
    (job,) = await asyncio.to_thread(managed_jobs, sky, cluster)
    assert job[1] == "RUNNING", job
    # The job's cluster is the jobs controller's: a Slurm allocation named after the stage's.
    assert [j for j in slurm_jobs(outcome.run_id) if cluster in j], slurm_jobs()
    assert "launching managed job" in read_log(slurm_settings, outcome.run_id, "train")

    assert await control.cancel(outcome.run_id)
    progress = await asyncio.wait_for(_finished(control, outcome.run_id), 600)

    assert progress.state is RunState.CANCELLED, progress
    assert progress.stages[0].state is StageState.CANCELLED
    assert await asyncio.to_thread(managed_jobs, sky, cluster) == [(job[0], "CANCELLED")]
    await assert_nothing_left(sky, outcome.run_id, cluster)


@pytest.mark.timeout(1200)
async def test_a_managed_stage_runs_to_its_end_with_the_tasks_exit_status(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    sky: Any,
) -> None:
    error = await asyncio.to_thread(network_check_error)
    if error is not None:
        pytest.skip(NO_NETWORK_CHECK.format(error=error))
    repo = git_repo(
        {
            "train.yaml": RESOURCES + "run: |\n  echo managed job started\n  exit 3\n",
            PIPELINE: MANAGED_PIPELINE,
        }
    )
    outcome = await control.start(request_for(repo))
    cluster = cluster_name_for(outcome.run_id, "train")
    progress = await asyncio.wait_for(
        _finished(control, outcome.run_id), START_TIMEOUT_S + END_TIMEOUT_S
    )

    assert progress.state is RunState.FAILED, progress
    assert progress.stages[0].exit_code == 3, progress
    assert [status for _, status in managed_jobs(sky, cluster)] == ["FAILED"]
    assert "managed job started" in read_log(slurm_settings, outcome.run_id, "train")
    await assert_nothing_left(sky, outcome.run_id, cluster)


async def _finished(control: RunControl, run_id: str) -> Any:
    while True:
        progress = await control.progress(run_id)
        if progress is not None and progress.state.finished:
            return progress
        await asyncio.sleep(2)
