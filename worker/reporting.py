"""Reporting runs back where they were asked for (GitHub, Slack), and gating who may start them.

Each reporter is one small class behind the `Reporter` protocol; the workflow calls the
`report_progress` activity once per reporter at every change, so a failing Slack never
blocks GitHub (and neither ever fails the run or its teardown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from worker.metrics import counting_reporting_errors
from worker.models import AuthorizeInput, AuthorizeOutput, ReportInput, ReportOutput
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.github.service import GitHubServices

NO_GATE = (
    "this skyrun worker has no GitHub credentials (GITHUB_TOKEN or a GitHub App), "
    "so it cannot check who asked; nothing was run"
)
UNKNOWN_REPORTER = "no reporter named {name} on this worker"


class Reporter(Protocol):
    name: str

    async def report(self, data: ReportInput) -> dict[str, str]:
        """Create or update this reporter's view of the run; return handles to edit it later."""
        ...


class Gate(Protocol):
    async def authorize(self, data: AuthorizeInput) -> AuthorizeOutput:
        """Decide, through the forge's API, whether the requester may spend compute."""
        ...


class ReportingActivities:
    def __init__(self, reporters: list[Reporter], gate: Gate | None = None) -> None:
        self.reporters = {reporter.name: reporter for reporter in reporters}
        self.gate = gate

    @activity.defn(name="report_progress")
    async def report_progress(self, data: ReportInput) -> ReportOutput:
        reporter = self.reporters.get(data.reporter)
        if reporter is None:
            raise ApplicationError(
                UNKNOWN_REPORTER.format(name=data.reporter), type="NoReporter", non_retryable=True
            )
        with counting_reporting_errors(data.reporter):
            return ReportOutput(handles=await reporter.report(data))

    @activity.defn(name="authorize_run")
    async def authorize_run(self, data: AuthorizeInput) -> AuthorizeOutput:
        if self.gate is None:
            return AuthorizeOutput(allowed=False, reason=NO_GATE)
        return await self.gate.authorize(data)


def make_reporting(settings: Settings, github: GitHubServices | None = None) -> ReportingActivities:
    """The reporters this worker's settings configure (none on a bare local stack).

    `github` shares the worker's GitHub auth (and token cache) with its checkouts and comment
    commands; without it one is made from the settings (then without a Temporal client, so its
    comments and check runs show no baseline; the Slack reporter finds baselines through the
    activity's client). Both compare with worker/baseline.py's run, in this task queue.
    """
    reporters: list[Reporter] = []
    gate: Gate | None = None
    if github is None and settings.github_configured:
        from worker.github.service import make_github

        github = make_github(settings)
    if github is not None and github.configured:
        reporters.append(github.reporter)
        gate = github.gate
    if settings.slack_configured:
        from worker.slack.reporter import SlackReporter

        masker = github.auth.masker if github is not None else None
        reporters.append(SlackReporter(settings, masker=masker))
    return ReportingActivities(reporters, gate)
