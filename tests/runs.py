"""Driving runs in tests: requests for a local repository, waiting for a run or a stage, and
what a run leaves behind (clusters, processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from worker.contract import RunProgress, RunRequest, StageState, Trigger, lane_for_branch
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
