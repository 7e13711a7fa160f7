"""What the command line prints about runs: each stage as it changes, a run's summary and links,
and the exit status a run maps to."""

from __future__ import annotations

import asyncio
import sys

from worker.capacity import queued_line
from worker.contract import RunProgress, RunState
from worker.costview import cost_text, estimate_text
from worker.formatting import format_duration, format_number
from worker.links import Links
from worker.runcontrol import RunControl
from worker.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3

UNKNOWN_RUN = "no run with id {run_id} (see `skyrun runs`)"


def exit_code_for(progress: RunProgress | None) -> int:
    if progress is None:
        return EXIT_FAILED
    if progress.state in (RunState.SUCCEEDED, RunState.SKIPPED):
        return EXIT_OK
    if progress.state is RunState.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_FAILED


async def follow(control: RunControl, run_id: str, interval_s: float = 0.5) -> RunProgress | None:
    """Print each stage change until the run is finished; return its final progress."""
    seen: dict[str, str] = {}
    place = ""
    progress = None
    while True:
        progress = await control.progress(run_id)
        if progress is None:
            print(UNKNOWN_RUN.format(run_id=run_id), file=sys.stderr)
            return None
        if queued_line(progress) != place:
            place = queued_line(progress)
            if place:
                print(f"  {place}", flush=True)
        for stage in progress.stages:
            if seen.get(stage.name) != stage.state.value:
                seen[stage.name] = stage.state.value
                took = (
                    f" ({format_duration(stage.duration_s)})"
                    if stage.duration_s is not None
                    else ""
                )
                if stage.reused_from:
                    took = f" (reused from {stage.reused_from})"
                print(f"  {stage.name:<14} {stage.state.value}{took}", flush=True)
        if progress.state.finished:
            return progress
        await asyncio.sleep(interval_s)


def print_summary(progress: RunProgress | None, settings: Settings) -> None:
    if progress is None:
        return
    links = Links(settings)
    print(f"run {progress.run_id}: {progress.state.value}")
    if progress.state is RunState.QUEUED and progress.queue_position is not None:
        print(f"  {queued_line(progress)}")
    if progress.error:
        print(f"  {progress.error}")
    failed = progress.failed_stage
    if failed and failed.log_tail:
        print("  last log lines:")
        for line in failed.log_tail[-10:]:
            print(f"    {line}")
    for name, value in progress.metrics.items():
        print(f"  metric {name} = {format_number(value)}")
    if estimate := estimate_text(progress):
        print(f"  estimate: {estimate}")
    if cost := cost_text(progress):
        print(f"  cost:     {cost}")
    print(f"  page:     {links.run(progress.run_id)}")
    if progress.retry_of:
        print(f"  retry of: {links.run(progress.retry_of)}")
    for stage in progress.stages:
        print(f"  log:      {links.stage_log(progress.run_id, stage)}")
    print(f"  temporal: {links.temporal(progress.run_id)}")
