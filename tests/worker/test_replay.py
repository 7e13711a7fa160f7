"""Runs in flight survive an upgrade: histories recorded with earlier releases replay, command for
command, on today's workflow code (recorded with tests/worker/histories/record.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker.coordinator import CoordinatorWorkflow
from worker.github.workflow import GitHubCommandWorkflow, GitHubDeliveryWorkflow
from worker.workflow import PipelineWorkflow

REPLAY_BUILD_ID = "recorded"
"""The Replayer's task queue is `replay-<build id>`; record.py records on that queue, as a run
computes its lane coordinator's id from its task queue."""
HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json"))


def test_histories_of_every_path_were_recorded() -> None:
    names = {path.stem for path in HISTORIES}
    assert {"succeeded", "failed", "cancelled", "superseded", "superseding"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_a_recorded_history_replays_on_todays_code(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(
        build_id=REPLAY_BUILD_ID,
        workflows=[
            PipelineWorkflow,
            CoordinatorWorkflow,
            GitHubCommandWorkflow,
            GitHubDeliveryWorkflow,
        ],
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
