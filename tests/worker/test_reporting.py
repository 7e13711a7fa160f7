"""The workflow's reporting and gating hooks, with recording reporters (real Temporal)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError

from tests.runs import request_for, wait_finished
from worker.contract import GitHubTarget, RunProgress, RunState, Trigger
from worker.models import AuthorizeInput, AuthorizeOutput, ReportInput
from worker.process import build_workers, running_workers
from worker.reporting import NO_GATE, ReportingActivities
from worker.runcontrol import RunControl
from worker.settings import Settings


class RecordingReporter:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.seen: list[ReportInput] = []

    async def report(self, data: ReportInput) -> dict[str, str]:
        self.seen.append(data)
        if self.fail:
            raise RuntimeError("API down")
        return {"comment_id": "42"}


class Gate:
    def __init__(self, allowed: bool, commit: str = "") -> None:
        self.allowed, self.commit = allowed, commit

    async def authorize(self, data: AuthorizeInput) -> AuthorizeOutput:
        if self.allowed:
            return AuthorizeOutput(allowed=True, commit=self.commit)
        return AuthorizeOutput(
            allowed=False, reason=f"{data.request.requested_by} may not run this"
        )


PIPELINE = {
    "a.yaml": "run: echo '::metric loss=0.5'\n",
    ".skyrun.yaml": "stages: [{name: a, task: a.yaml}]\n",
}


async def _run(
    client: Client, settings: Settings, reporting: ReportingActivities, **fields: object
) -> RunProgress:
    """Run to the very end (final reports included) and return the final progress."""
    control = RunControl(client, settings.temporal_task_queue)
    async with running_workers(build_workers(client, settings, reporting=reporting)):
        outcome = await control.start(request_for(**fields))  # type: ignore[arg-type]
        with contextlib.suppress(WorkflowFailureError):
            await client.get_workflow_handle(outcome.run_id).result()
        progress = await wait_finished(control, outcome.run_id)
    return progress


async def test_reporter_sees_every_state_and_reuses_its_handles(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(PIPELINE)
    github = RecordingReporter("github")
    reporting = ReportingActivities([github], Gate(allowed=True))
    await _run(
        client,
        settings,
        reporting,
        repo=repo,
        trigger=Trigger.COMMENT,
        github=GitHubTarget(pr_number=7),
    )
    states = [r.progress.state for r in github.seen]
    assert states[0] is RunState.QUEUED
    assert states[-1] is RunState.SUCCEEDED
    assert RunState.RUNNING in states
    assert github.seen[-1].progress.metrics == {"loss": 0.5}
    assert github.seen[0].handles == {}
    assert all(r.handles == {"comment_id": "42"} for r in github.seen[1:])


async def test_failing_reporter_never_fails_the_run(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(PIPELINE)
    reporting = ReportingActivities([RecordingReporter("github", fail=True)], Gate(allowed=True))
    progress = await _run(
        client,
        settings,
        reporting,
        repo=repo,
        trigger=Trigger.COMMENT,
        github=GitHubTarget(pr_number=7),
    )
    assert progress.state is RunState.SUCCEEDED


async def test_denied_requester_runs_nothing_and_is_told_why(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(PIPELINE)
    github = RecordingReporter("github")
    reporting = ReportingActivities([github], Gate(allowed=False))
    progress = await _run(
        client,
        settings,
        reporting,
        repo=repo,
        trigger=Trigger.COMMENT,
        github=GitHubTarget(pr_number=7),
    )
    assert progress.state is RunState.DENIED
    assert progress.error == "tester may not run this"
    assert progress.stages == []
    assert github.seen[-1].progress.state is RunState.DENIED
    assert not (settings.logs_dir / progress.run_id).exists()


async def test_without_a_gate_github_runs_are_refused(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(PIPELINE)
    reporting = ReportingActivities([RecordingReporter("github")], None)
    progress = await _run(
        client,
        settings,
        reporting,
        repo=repo,
        trigger=Trigger.COMMENT,
        github=GitHubTarget(pr_number=7),
    )
    assert progress.state is RunState.DENIED
    assert progress.error == NO_GATE


async def test_push_run_on_unwatched_branch_reports_nothing(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {**PIPELINE, ".skyrun.yaml": "on: {push: [release]}\nstages: [{name: a, task: a.yaml}]\n"}
    )
    github = RecordingReporter("github")
    reporting = ReportingActivities([github], Gate(allowed=True))
    progress = await _run(
        client,
        settings,
        reporting,
        repo=repo,
        trigger=Trigger.PUSH,
        check_push_filter=True,
        github=GitHubTarget(),
    )
    assert progress.state is RunState.SKIPPED
    assert github.seen == []
