"""Driving queued runs in tests: jobs that stamp when they compute and wait for their own gate,
and waiting for a run's place in line."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.contract import RunProgress, RunState
from worker.runcontrol import RunControl

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


async def wait_computing(control: RunControl, run_id: str, stamps: Path) -> None:
    """Until the run's job has written that it started."""
    for _ in range(1200):
        if (stamps / run_id).exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never started computing: {await control.progress(run_id)}")
