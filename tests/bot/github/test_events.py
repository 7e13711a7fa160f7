"""Routing verified deliveries (shaped by the fake GitHub) to what skyrun does: pure, no I/O."""

from __future__ import annotations

import pytest

from bot.github.events import (
    R_BOT,
    R_CLOSED,
    R_DELETED,
    R_EVENT,
    R_FORK,
    R_NOT_ALLOWED,
    R_NOT_BRANCH,
    R_NOT_COMMAND,
    R_NOT_NEW,
    R_NOT_PR,
    R_TAG,
    CancelLane,
    Ignore,
    PayloadError,
    StartCommand,
    StartRun,
    route,
)
from tests.bot.github.helpers import ALL, INSTALLATION, REPO, comment_payload, host
from tests.fakes.github import FakeGitHub
from worker.commands import E_NOT_ARGUMENT, CommandKind
from worker.contract import GitHubTarget, RunRequest, Trigger, lane_for_branch, lane_for_pr
from worker.github.contract import GitHubCommand
from worker.links import GitHubHost


def test_push_to_a_branch_starts_a_run_of_that_commit(fake: FakeGitHub) -> None:
    sha = fake.commit(REPO, {"a.txt": "1"}, branch="release/1")
    payload = fake.push_payload(REPO, "refs/heads/release/1", sha, sender="alice")

    assert route("push", "d-1", payload, ALL, host(fake)) == StartRun(
        RunRequest(
            repo=REPO,
            clone_url=f"{fake.url}/{REPO}.git",
            ref="release/1",
            commit=sha,
            trigger=Trigger.PUSH,
            requested_by="alice",
            lane=lane_for_branch(REPO, "release/1"),
            delivery_id="d-1",
            github=GitHubTarget(installation_id=INSTALLATION),
            default_branch="main",
            check_push_filter=True,
        )
    )


@pytest.mark.parametrize(
    ("ref", "deleted", "reason"),
    [
        ("refs/tags/v1.0", False, R_TAG),
        ("refs/heads/old", True, R_DELETED),
        ("refs/notes/commits", False, R_NOT_BRANCH.format(ref="refs/notes/commits")),
    ],
)
def test_tags_deletions_and_other_refs_are_ignored(
    fake: FakeGitHub, ref: str, deleted: bool, reason: str
) -> None:
    sha = "0" * 40 if deleted else fake.head(REPO)
    payload = fake.push_payload(REPO, ref, sha, sender="alice", deleted=deleted)
    assert route("push", "d", payload, ALL, host(fake)) == Ignore(reason)


def test_a_skyrun_comment_becomes_a_command_for_the_worker(fake: FakeGitHub) -> None:
    payload = comment_payload(fake, "/skyrun train EPOCHS=2")
    action = route("issue_comment", "d-2", payload, ALL, host(fake))

    comment = payload["comment"]
    assert action == StartCommand(
        GitHubCommand(
            action=CommandKind.RUN,
            repo=REPO,
            clone_url=f"{fake.url}/{REPO}.git",
            pr_number=payload["issue"]["number"],
            comment_id=comment["id"],
            comment_created_at=comment["created_at"],
            requested_by="alice",
            delivery_id="d-2",
            installation_id=INSTALLATION,
            default_branch="main",
            stages=["train"],
            envs={"EPOCHS": "2"},
        )
    )


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ("/skyrun cancel", CommandKind.CANCEL),
        ("/skyrun status", CommandKind.STATUS),
        ("/skyrun help", CommandKind.HELP),
    ],
)
def test_each_comment_command(fake: FakeGitHub, body: str, action: CommandKind) -> None:
    routed = route("issue_comment", "d", comment_payload(fake, body), ALL, host(fake))
    assert isinstance(routed, StartCommand) and routed.command.action is action


def test_a_bad_command_is_answered_with_usage_not_dropped(fake: FakeGitHub) -> None:
    routed = route(
        "issue_comment", "d", comment_payload(fake, "/skyrun -x SECRET=hunter2"), ALL, host(fake)
    )
    assert isinstance(routed, StartCommand)
    assert routed.command.action is CommandKind.USAGE
    assert routed.command.error == E_NOT_ARGUMENT.format(word="'-x'")
    assert routed.command.error == "'-x' is neither a stage name nor KEY=VALUE"
    assert routed.command.envs == {}


@pytest.mark.parametrize(
    ("body", "user", "user_type", "reason"),
    [
        ("/skyrun", "dependabot[bot]", "Bot", R_BOT),
        ("/skyrun", "renovate[bot]", "User", R_BOT),
        ("<!-- skyrun:reply x -->\n/skyrun", "skyrun-bot", "User", R_BOT),
        ("Thanks! I'll /skyrun later", "alice", "User", R_NOT_COMMAND),
    ],
)
def test_bots_and_plain_comments_are_ignored(
    fake: FakeGitHub, body: str, user: str, user_type: str, reason: str
) -> None:
    fake.add_user(user, user_type)
    assert route(
        "issue_comment", "d", comment_payload(fake, body, user), ALL, host(fake)
    ) == Ignore(reason)


def test_edits_and_issue_comments_are_ignored(fake: FakeGitHub) -> None:
    edited = comment_payload(fake, "/skyrun", action="edited")
    assert route("issue_comment", "d", edited, ALL, host(fake)) == Ignore(
        R_NOT_NEW.format(action="edited")
    )
    on_issue = comment_payload(fake, "/skyrun")
    del on_issue["issue"]["pull_request"]
    assert route("issue_comment", "d", on_issue, ALL, host(fake)) == Ignore(R_NOT_PR)


def test_pull_request_opened_runs_its_head_and_closed_cancels(fake: FakeGitHub) -> None:
    sha = fake.commit(REPO, {"a.txt": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="alice")

    opened = route(
        "pull_request", "d-3", fake.pull_request_payload(pull, "synchronize"), ALL, host(fake)
    )
    closed = route(
        "pull_request", "d-4", fake.pull_request_payload(pull, "closed"), ALL, host(fake)
    )
    labeled = route(
        "pull_request", "d-5", fake.pull_request_payload(pull, "labeled"), ALL, host(fake)
    )

    assert isinstance(opened, StartRun)
    request = opened.request
    assert (request.trigger, request.commit, request.ref) == (Trigger.PULL_REQUEST, sha, "feature")
    assert request.lane == lane_for_pr(REPO, pull.number)
    assert request.check_pr_filter and not request.check_push_filter
    assert request.github == GitHubTarget(
        installation_id=INSTALLATION, pr_number=pull.number, base_branch="main", head_repo=REPO
    )
    assert closed == CancelLane(lane_for_pr(REPO, pull.number), R_CLOSED)
    assert isinstance(labeled, Ignore) and "labeled" in labeled.reason


def test_fork_pull_requests_never_run_by_themselves(fake: FakeGitHub) -> None:
    fork = fake.fork(REPO, "mallory")
    fake.commit(fork.full_name, {"evil.sh": "curl | sh"}, branch="patch")
    pull = fake.open_pull(REPO, "patch", user="mallory", head_repo=fork.full_name)

    payload = fake.pull_request_payload(pull, "opened")
    assert route("pull_request", "d", payload, ALL, host(fake)) == Ignore(R_FORK)
    payload["pull_request"]["head"]["repo"] = None  # the fork was deleted
    assert route("pull_request", "d", payload, ALL, host(fake)) == Ignore(R_FORK)


def test_repositories_outside_the_allowed_globs_are_ignored(fake: FakeGitHub) -> None:
    payload = fake.push_payload(REPO, "refs/heads/main", fake.head(REPO), sender="alice")
    assert route("push", "d", payload, ["other/*"], host(fake)) == Ignore(
        R_NOT_ALLOWED.format(repo=REPO)
    )
    assert isinstance(route("push", "d", payload, ["other/*", "ACME/*"], host(fake)), StartRun)


def test_unhandled_events_and_wrong_shapes(fake: FakeGitHub) -> None:
    assert route("star", "d", {"action": "created"}, ALL, host(fake)) == Ignore(
        R_EVENT.format(event="star")
    )
    with pytest.raises(PayloadError, match="unexpected push payload: ref: Field required"):
        route("push", "d", {"after": "x", "repository": {"full_name": REPO}}, ALL, host(fake))


def test_clone_urls_come_from_the_configured_host_not_the_payload(fake: FakeGitHub) -> None:
    payload = fake.push_payload(REPO, "refs/heads/main", fake.head(REPO), sender="alice")
    payload["repository"]["clone_url"] = "/tmp/local-repo"
    ghes = GitHubHost.from_api_url("https://ghe.acme.com/api/v3")
    routed = route("push", "d", payload, ALL, ghes)
    assert isinstance(routed, StartRun)
    assert routed.request.clone_url == f"https://ghe.acme.com/{REPO}.git"
    comment = route("issue_comment", "d", comment_payload(fake, "/skyrun"), ALL, ghes)
    assert isinstance(comment, StartCommand)
    assert comment.command.clone_url == f"https://ghe.acme.com/{REPO}.git"
