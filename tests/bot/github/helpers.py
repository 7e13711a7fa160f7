"""Helpers of the GitHub front-door tests: the repository the `fake` fixture serves, and
deliveries shaped by the fake GitHub."""

from __future__ import annotations

from typing import Any

from tests.fakes.github import FakeGitHub
from worker.links import GitHubHost

REPO = "acme/ml"
ALL = ["*"]
INSTALLATION = 9


def host(fake: FakeGitHub) -> GitHubHost:
    return GitHubHost.from_api_url(fake.url)


def comment_payload(
    fake: FakeGitHub, body: str, user: str = "alice", **kwargs: Any
) -> dict[str, Any]:
    """An `issue_comment` delivery of `body` on a new pull request of REPO."""
    pull = fake.open_pull(REPO, "main", user="alice")
    return fake.comment_payload(fake.add_comment(REPO, pull.number, user, body), **kwargs)
