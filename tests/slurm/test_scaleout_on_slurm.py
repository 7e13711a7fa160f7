"""Scale-out with the SkyPilot backend behind an API server: a SIGKILLed worker's run goes on.

Two `skyrun worker` processes share the API server (so no run is pinned to either). The one
running a stage is killed; the stage's heartbeat times out and the other worker runs it again on
the same cluster, and the run succeeds with nothing left on Slurm. (The killed attempt's job was
not cancelled by anyone: SkyPilot queues the retry's job behind it on the one-CPU cluster.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.slurm.conftest import ApiServer
from tests.slurm.test_skypilot_on_slurm import (
    RESOURCES,
    assert_nothing_left,
    describe,
    read_log,
    request_for,
    wait_finished,
)
from worker.contract import RunState
from worker.runcontrol import RunControl
from worker.settings import Settings

pytestmark = pytest.mark.slurm

SLOW_STAGE = RESOURCES + "run: |\n  echo started\n  sleep 45\n  echo finished\n"


async def holder_of_the_stage(client: Client, run_id: str, timeout: float = 600) -> int:
    """The pid of the worker running the run's stage (Temporal's default identity is pid@host)."""
    handle = client.get_workflow_handle(run_id)
    for _ in range(int(timeout)):
        desc = await handle.describe()
        for pending in desc.raw_description.pending_activities:
            if pending.activity_type.name == "run_stage" and pending.last_worker_identity:
                return int(pending.last_worker_identity.split("@", 1)[0])
        await asyncio.sleep(1)
    raise AssertionError("the stage never started")


@pytest.mark.timeout(1200)
async def test_another_worker_carries_a_sigkilled_workers_run_on(
    client: Client,
    sky: Any,
    sky_api_server: ApiServer,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    repo = git_repo({"t.yaml": SLOW_STAGE, ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n"})
    env = {
        **os.environ,
        **sky_api_server.env,
        "SKYRUN_BACKEND": "skypilot",
        "SKYPILOT_API_SERVER_ENDPOINT": sky_api_server.endpoint,
        "TEMPORAL_ADDRESS": slurm_settings.temporal_target,
        "TEMPORAL_TASK_QUEUE": slurm_settings.temporal_task_queue,
        "SKYRUN_LOG_DIR": str(slurm_settings.logs_dir),
    }
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "worker",
            env={**env, "SKYRUN_DATA_DIR": str(tmp_path / f"data-{n}")},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for n in (1, 2)
    ]
    control = RunControl(client, slurm_settings.temporal_task_queue)
    try:
        outcome = await control.start(request_for(repo))
        pid = await holder_of_the_stage(client, outcome.run_id)
        (victim,) = [w for w in workers if w.pid == pid]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()

        progress = await wait_finished(control, outcome.run_id)
        assert progress.state is RunState.SUCCEEDED, describe(progress, slurm_settings)
        log = read_log(slurm_settings, outcome.run_id, "t")
        assert "(attempt 2)" in log and "finished" in log
        await assert_nothing_left(sky, outcome.run_id)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
                await asyncio.wait_for(worker.wait(), 90)
