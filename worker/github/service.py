"""Compose the worker's GitHub side from settings: one auth (and token cache) shared by all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from temporalio.client import Client

from worker.baseline import Baselines
from worker.contract import RunRequest
from worker.github.activities import GitHubCommandActivities
from worker.github.auth import ClientOptions, GitHubAuth
from worker.github.gate import GitHubGate
from worker.github.reporter import GitHubReporter
from worker.links import Links
from worker.settings import Settings


@dataclass
class GitHubServices:
    auth: GitHubAuth
    gate: GitHubGate
    reporter: GitHubReporter
    commands: GitHubCommandActivities | None
    """None without a Temporal client (then no comment commands are served)."""

    @property
    def configured(self) -> bool:
        return self.auth.configured

    def token_for_request(self, request: RunRequest) -> str | None:
        """The `token_provider` of the pipeline's checkouts."""
        return self.auth.token_for_request(request)

    def activities(self) -> list[Callable[..., object]]:
        if self.commands is None:
            return []
        c = self.commands
        return [
            c.dispatch,
            c.acknowledge,
            c.resolve,
            c.start_run,
            c.cancel_runs,
            c.reply,
            c.retry_run,  # retry from the failed stage
            c.start_sweep,
            c.approve_runs,
        ]


def make_github(
    settings: Settings, client: Client | None = None, options: ClientOptions | None = None
) -> GitHubServices:
    """The GitHub side of a worker; unconfigured (no credentials) it refuses clearly when used."""
    auth = GitHubAuth(settings, options)
    links = Links(settings)
    gate = GitHubGate(auth)
    return GitHubServices(
        auth=auth,
        gate=gate,
        reporter=GitHubReporter(
            auth, links, Baselines(client, settings.temporal_task_queue) if client else None
        ),
        commands=GitHubCommandActivities(
            auth, gate, client, settings.temporal_task_queue, links, max_sweep=settings.max_sweep
        )
        if client
        else None,
    )
