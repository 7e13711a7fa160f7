"""What the command line prints about a run (bot/console.py), without Temporal."""

from __future__ import annotations

import pytest

from bot.console import print_summary
from worker.contract import RunProgress, RunState, Trigger
from worker.settings import load_settings


def test_skyrun_status_of_a_queued_run_prints_its_place_in_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = RunProgress(
        "models-1", "acme/models", "main", "", Trigger.CLI, "me", state=RunState.QUEUED
    )
    progress.queue_position, progress.queue_ahead = 2, "acme/models#41"
    progress.queue_pool, progress.queue_capacity = "deployment", 2
    print_summary(progress, load_settings(_env_file=None))
    out = capsys.readouterr().out
    assert out.startswith("run models-1: queued\n")
    assert "  ⏳ Queued: 2nd in line, behind acme/models#41. this skyrun runs at most 2" in out

    progress.state, progress.queue_position = RunState.SUCCEEDED, None
    print_summary(progress, load_settings(_env_file=None))
    assert "in line" not in capsys.readouterr().out
