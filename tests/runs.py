"""Driving runs in tests: requests for a local repository, waiting for a run or a stage, and
what a run leaves behind (clusters, processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from worker.contract import RunProgress, RunRequest, StageState, Trigger, lane_for_branch
from worker.coordinator import (
    COORDINATOR_WORKFLOW,
    SIGNAL_WARM,
    CoordinatorState,
    Handover,
    WarmCluster,
    lane_workflow_id,
)
from worker.runcontrol import RunControl
from worker.settings import Settings

SLOW_TASK = """\
run: |
  echo $$ > {pidfile}
  sleep 300 &
  echo $! > {pidfile}.child
  echo started
  wait
"""


def request_for(repo: Path, **fields: object) -> RunRequest:
    values: dict[str, object] = {
        "repo": str(repo),
        "clone_url": str(repo),
        "ref": "main",
        "trigger": Trigger.CLI,
        "requested_by": "tester",
        "lane": lane_for_branch(str(repo), "main"),
    }
    values.update(fields)
    return RunRequest(**values)  # type: ignore[arg-type]


async def wait_finished(control: RunControl, run_id: str, timeout: float = 120) -> RunProgress:
    async def poll() -> RunProgress:
        while True:
            progress = await control.progress(run_id)
            if progress is not None and progress.state.finished:
                return progress
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), timeout)


async def wait_stage_running(control: RunControl, run_id: str, stage: str) -> None:
    async def poll() -> None:
        while True:
            progress = await control.progress(run_id)
            if progress and any(
                s.name == stage and s.state is StageState.RUNNING for s in progress.stages
            ):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), 60)


def clusters_left(settings: Settings) -> list[str]:
    root = settings.data_path / "clusters"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def wait_pidfile(path: Path) -> int:
    for _ in range(300):
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never written")


def head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def handed_cluster(
    repo: Path,
    queue: str,
    run_id: str,
    seconds: float,
    since_minutes: float = 0,
    usd: float | None = 3.6,
) -> WarmCluster:
    """A warm cluster as a run of `run_id` would hand it to its lane, warm for `seconds`."""
    now = datetime.now(UTC)
    return WarmCluster(
        cluster="gpu",
        name=f"skyrun-{run_id}-gpu",
        fingerprint=f"local:{run_id}",
        run_id=run_id,
        queue=queue,
        until=(now + timedelta(seconds=seconds)).isoformat(),
        hourly_usd=usd,
        lane=lane_for_branch(str(repo), "main"),
        since=(now + timedelta(minutes=since_minutes)).isoformat(),
        repo=str(repo),
    )


async def hand_over(
    client: Client, settings: Settings, repo: Path, *clusters: WarmCluster
) -> WorkflowHandle[Any, Any]:
    lane = lane_for_branch(str(repo), "main")
    return await client.start_workflow(
        COORDINATOR_WORKFLOW,
        CoordinatorState(lane),
        id=lane_workflow_id(lane, settings.temporal_task_queue),
        task_queue=settings.temporal_task_queue,
        start_signal=SIGNAL_WARM,
        start_signal_args=[Handover(list(clusters))],
    )
