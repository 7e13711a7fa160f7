"""Driving queued runs in tests: jobs that stamp when they compute and wait for their own gate,
and waiting for a run's place in line."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.contract import RunProgress, RunState
from worker.runcontrol import RunControl
from worker.settings import Settings

STAMPED = """\
run: |
  echo "start $(date +%s.%N)" >> {stamps}/$SKYRUN_RUN_ID
  while [ ! -e {gates}/$SKYRUN_RUN_ID ] && [ ! -e {gates}/all ]; do sleep 0.05; done
  echo "end $(date +%s.%N)" >> {stamps}/$SKYRUN_RUN_ID
"""
"""A job that writes when it starts and ends computing, and ends once the test opens its gate
(a file named after its run, or `all`)."""


def stamped_pipeline(stamps: Path, gates: Path, concurrency: int | None = None) -> dict[str, str]:
    pipeline = "stages: [{name: work, task: work.yaml}]\n"
    if concurrency is not None:
        pipeline += f"concurrency: {concurrency}\n"
    return {
        ".skyrun.yaml": pipeline,
        "work.yaml": STAMPED.format(stamps=stamps, gates=gates),
    }


@dataclass
class Span:
    run_id: str
    start: float
    end: float


def spans(stamps: Path) -> list[Span]:
    """When each run's job computed (as it wrote itself), in the order they started."""
    found = []
    for path in stamps.iterdir():
        marks = dict(line.split() for line in path.read_text().splitlines())
        found.append(Span(path.name, float(marks["start"]), float(marks.get("end", "inf"))))
    return sorted(found, key=lambda span: span.start)


def most_at_once(stamps: Path) -> int:
    """The largest number of jobs that computed at the same moment."""
    events = sorted(
        [(span.start, 1) for span in spans(stamps)] + [(span.end, -1) for span in spans(stamps)],
        key=lambda event: (event[0], event[1]),
    )
    return max(itertools.accumulate(delta for _, delta in events), default=0)


def open_gate(gates: Path, run_id: str) -> None:
    (gates / run_id).write_text("go")


async def wait_progress(
    control: RunControl,
    run_id: str,
    predicate: Callable[[RunProgress], bool],
    timeout: float = 60,
) -> RunProgress:
    """Poll the run's progress until `predicate` holds; fail with the last one seen."""
    last: RunProgress | None = None

    async def poll() -> RunProgress:
        nonlocal last
        while True:
            last = await control.progress(run_id)
            if last is not None and predicate(last):
                return last
            await asyncio.sleep(0.05)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"{run_id}: {last}") from None


async def wait_queued(
    control: RunControl, run_id: str, position: int, ahead: str = "", timeout: float = 60
) -> RunProgress:
    return await wait_progress(
        control,
        run_id,
        lambda p: (
            p.state is RunState.QUEUED and p.queue_position == position and p.queue_ahead == ahead
        ),
        timeout,
    )


async def wait_computing(
    control: RunControl, run_id: str, stamps: Path, timeout: float = 60
) -> None:
    """Until the run's job has written that it started."""
    for _ in range(int(timeout / 0.05)):
        if (stamps / run_id).exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never started computing: {await control.progress(run_id)}")


SKYRUN = [sys.executable, "-m", "bot.cli"]


async def worker_process(settings: Settings) -> asyncio.subprocess.Process:
    """`skyrun worker` as its own process, configured as `settings` (to be killed by a test)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SKYRUN_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": settings.temporal_target,
        "TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "SKYRUN_DATA_DIR": str(settings.data_path),
        "SKYRUN_PUBLIC_URL": settings.public_url,
        "SKYRUN_LOCAL_SANDBOX": "on" if settings.local_sandbox else "off",
        "SKYRUN_LOCAL_MOUNTS": ",".join(settings.local_mounts),
        "SKYRUN_MAX_CONCURRENT_RUNS": str(settings.max_concurrent_runs),
    }
    return await asyncio.create_subprocess_exec(
        *SKYRUN,
        "worker",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
