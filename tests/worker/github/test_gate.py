"""Who may spend compute: the repository role through the API, and which commit a comment means."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.github import FakeGitHub
from tests.worker.github.stack import REPO
from worker.commands import CommandKind
from worker.contract import GitHubTarget, RunRequest, Trigger
from worker.github import texts
from worker.github.auth import ClientOptions, GitHubAuth
from worker.github.contract import GitHubCommand
from worker.github.gate import GitHubGate
from worker.models import AuthorizeInput
from worker.settings import Settings


@pytest.fixture
def gate(fake: FakeGitHub, make_settings: Callable[..., Settings]) -> GitHubGate:
    settings = make_settings(GITHUB_TOKEN=fake.token, GITHUB_API_URL=fake.url)
    return GitHubGate(GitHubAuth(settings, ClientOptions.unpaced()))


def command(fake: FakeGitHub, number: int, user: str, action: CommandKind) -> GitHubCommand:
    comment = fake.add_comment(REPO, number, user, f"/skyrun {action.value}")
    return GitHubCommand(
        action, REPO, "", number, comment.id, comment.created_at, user, f"d-{comment.id}"
    )


@pytest.mark.parametrize(
    ("role", "allowed", "permission"),
    [
        ("admin", True, "admin"),
        ("maintain", True, "write"),
        ("write", True, "write"),
        ("triage", False, "read"),
        ("read", False, "read"),
        (None, False, "read"),
    ],
)
async def test_only_write_maintain_and_admin_may_act(
    fake: FakeGitHub, gate: GitHubGate, role: str | None, allowed: bool, permission: str
) -> None:
    fake.add_user("bob")
    if role:
        fake.grant(REPO, "bob", role)
    pull = fake.open_pull(REPO, "main", user="acme")

    for action, what in (
        (CommandKind.RUN, texts.WHAT_RUN),
        (CommandKind.CANCEL, texts.WHAT_CANCEL),
    ):
        resolution = await gate.resolve(
            command(fake, pull.number, "bob", action), run=action is CommandKind.RUN
        )
        assert resolution.allowed is allowed
        if not allowed:
            assert resolution.reason == texts.NEEDS_WRITE.format(
                user="bob", repo=REPO, what=what, permission=permission
            )


async def test_a_run_resolves_the_head_base_and_ref(fake: FakeGitHub, gate: GitHubGate) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    resolution = await gate.resolve(command(fake, pull.number, "acme", CommandKind.RUN), run=True)
    assert (resolution.allowed, resolution.commit, resolution.ref) == (True, sha, "feature")
    assert (resolution.base_branch, resolution.head_repo) == ("main", REPO)


async def test_a_fork_runs_the_head_as_of_the_comment_or_not_at_all(
    fake: FakeGitHub, gate: GitHubGate
) -> None:
    fork = fake.fork(REPO, "mallory")
    reviewed = fake.commit(fork.full_name, {"a": "1"}, branch="patch")
    pull = fake.open_pull(REPO, "patch", user="mallory", head_repo=fork.full_name)
    before = command(fake, pull.number, "acme", CommandKind.RUN)

    resolution = await gate.resolve(before, run=True)
    assert resolution.allowed and resolution.commit == reviewed
    assert resolution.ref == "mallory:patch" and resolution.head_repo == fork.full_name

    moved = fake.commit(fork.full_name, {"a": "2"}, branch="patch")
    refused = await gate.resolve(before, run=True)
    assert not refused.allowed
    assert refused.reason == texts.HEAD_UNCERTAIN.format(head_repo=fork.full_name, commit=moved[:7])
    later = await gate.resolve(command(fake, pull.number, "acme", CommandKind.RUN), run=True)
    assert later.allowed and later.commit == moved


async def test_a_closed_pull_request_is_not_run(fake: FakeGitHub, gate: GitHubGate) -> None:
    pull = fake.open_pull(REPO, "main", user="acme")
    fake.close_pull(pull)
    resolution = await gate.resolve(command(fake, pull.number, "acme", CommandKind.RUN), run=True)
    assert not resolution.allowed
    assert resolution.reason == texts.PR_CLOSED.format(number=pull.number)


def pipeline_request(fake: FakeGitHub, trigger: Trigger, **target: object) -> AuthorizeInput:
    return AuthorizeInput(
        "run-1",
        RunRequest(
            repo=REPO,
            clone_url=f"{fake.url}/{REPO}.git",
            trigger=trigger,
            requested_by=str(target.pop("user", "acme")),
            commit=str(target.pop("commit", "")),
            github=GitHubTarget(**target),  # type: ignore[arg-type]
        ),
    )


async def test_pipeline_gate_for_pull_request_events(fake: FakeGitHub, gate: GitHubGate) -> None:
    fake.grant(REPO, "bob", "read")
    same = await gate.authorize(
        pipeline_request(fake, Trigger.PULL_REQUEST, pr_number=1, head_repo=REPO, commit="abc")
    )
    fork = await gate.authorize(
        pipeline_request(fake, Trigger.PULL_REQUEST, pr_number=1, head_repo="mallory/ml")
    )
    untrusted = await gate.authorize(
        pipeline_request(fake, Trigger.PULL_REQUEST, pr_number=1, head_repo=REPO, user="bob")
    )
    assert (same.allowed, same.commit) == (True, "abc")
    assert (fork.allowed, fork.reason) == (False, texts.FORK_PR)
    assert not untrusted.allowed and "needs write access" in untrusted.reason


async def test_pipeline_gate_resolves_a_comment_run_without_a_commit(
    fake: FakeGitHub, gate: GitHubGate
) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    comment = fake.add_comment(REPO, pull.number, "acme", "/skyrun")

    out = await gate.authorize(
        pipeline_request(fake, Trigger.COMMENT, pr_number=pull.number, comment_id=comment.id)
    )

    assert (out.allowed, out.commit) == (True, sha)
    assert fake.calls("GET", f"/issues/comments/{comment.id}$")
