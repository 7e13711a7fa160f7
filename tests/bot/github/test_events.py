"""Routing verified deliveries (shaped by the fake GitHub) to what skyrun does: pure, no I/O."""

from __future__ import annotations

import pytest

from bot.github.events import (
    R_ACTION,
    R_BOT,
    R_BUTTON,
    R_CLOSED,
    R_DELETED,
    R_EVENT,
    R_FORK,
    R_MERGE_GROUP_DESTROYED,
    R_NO_RUN,
    R_NOT_ALLOWED,
    R_NOT_BRANCH,
    R_NOT_COMMAND,
    R_NOT_NEW,
    R_NOT_OURS,
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
from worker.contract import (
    GitHubTarget,
    RunRequest,
    Trigger,
    lane_for_branch,
    lane_for_merge_group,
    lane_for_pr,
)
from worker.github.contract import CommandSource, GitHubCommand
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


# Merge queue groups and check runs


def queued_group(fake: FakeGitHub) -> tuple[str, str]:
    """A pull request queued for merge: the group's branch and head."""
    fake.commit(REPO, {"a.txt": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="alice")
    branch = fake.merge_group(REPO, pull, {"a.txt": "1"})
    return branch, fake.head(REPO, branch)


def test_merge_group_checks_requested_runs_the_group_head_in_its_own_lane(
    fake: FakeGitHub,
) -> None:
    branch, head = queued_group(fake)
    payload = fake.merge_group_payload(REPO, branch, sender="alice")

    action = route("merge_group", "d-1", payload, ALL, host(fake))

    assert action == StartRun(
        RunRequest(
            repo=REPO,
            clone_url=f"{fake.url}/{REPO}.git",
            ref=branch,
            commit=head,
            trigger=Trigger.MERGE_GROUP,
            requested_by="alice",
            lane=lane_for_merge_group(REPO, branch),
            delivery_id="d-1",
            github=GitHubTarget(installation_id=INSTALLATION, base_branch="main"),
            default_branch="main",
        )
    )
    assert isinstance(action, StartRun)
    # Never the lane of a branch or a pull request: a group supersedes none of their runs.
    assert action.request.lane not in (
        lane_for_branch(REPO, "main"),
        lane_for_branch(REPO, branch),
        lane_for_pr(REPO, 1),
    )


def test_merge_group_destroyed_cancels_that_groups_lane(fake: FakeGitHub) -> None:
    branch, _ = queued_group(fake)
    payload = fake.merge_group_payload(REPO, branch, "destroyed", sender="alice", reason="dequeued")

    assert route("merge_group", "d-2", payload, ALL, host(fake)) == CancelLane(
        lane_for_merge_group(REPO, branch), R_MERGE_GROUP_DESTROYED.format(reason="dequeued")
    )


def test_merge_group_with_a_head_that_is_not_a_sha_is_refused(fake: FakeGitHub) -> None:
    branch, _ = queued_group(fake)
    payload = fake.merge_group_payload(REPO, branch, sender="alice")
    payload["merge_group"]["head_sha"] = "--upload-pack=x"
    with pytest.raises(PayloadError, match=r"merge_group\.head_sha"):
        route("merge_group", "d-3", payload, ALL, host(fake))


@pytest.mark.parametrize(
    ("identifier", "kind"),
    [
        ("rerun", CommandKind.RUN),
        ("cancel", CommandKind.CANCEL),
        ("retry", CommandKind.RETRY),
    ],
)
def test_check_run_buttons_become_commands_on_the_run_they_name(
    fake: FakeGitHub, identifier: str, kind: CommandKind
) -> None:
    sha = fake.commit(REPO, {"a.txt": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="alice")
    check = fake.add_check_run(REPO, sha, external_id="ml-0123456789")
    payload = fake.check_run_payload(check, "requested_action", sender="bob", identifier=identifier)

    action = route("check_run", "d-4", payload, ALL, host(fake))

    assert action == StartCommand(
        GitHubCommand(
            action=kind,
            repo=REPO,
            clone_url=f"{fake.url}/{REPO}.git",
            pr_number=pull.number,
            comment_id=0,
            comment_created_at="",
            requested_by="bob",
            delivery_id="d-4",
            installation_id=INSTALLATION,
            default_branch="main",
            source=CommandSource.BUTTON,
            run_id="ml-0123456789",
            check_run_id=check.id,
            head_sha=sha,
        )
    )


def test_github_rerun_of_a_check_run_or_suite_is_a_rerun(fake: FakeGitHub) -> None:
    sha = fake.head(REPO)
    check = fake.add_check_run(REPO, sha, external_id="ml-0123456789")

    by_run = route(
        "check_run",
        "d-5",
        fake.check_run_payload(check, "rerequested", sender="bob"),
        ALL,
        host(fake),
    )
    by_suite = route(
        "check_suite", "d-6", fake.check_suite_payload(REPO, sha, sender="bob"), ALL, host(fake)
    )

    assert isinstance(by_run, StartCommand) and isinstance(by_suite, StartCommand)
    assert by_run.command.action is by_suite.command.action is CommandKind.RUN
    assert by_run.command.source is by_suite.command.source is CommandSource.RERUN
    assert (by_run.command.run_id, by_run.command.check_run_id) == ("ml-0123456789", check.id)
    assert by_run.command.pr_number == by_suite.command.pr_number == 0  # on no pull request
    # A suite names only its commit: the worker finds skyrun's check run on it.
    assert (by_suite.command.run_id, by_suite.command.head_sha) == ("", sha)


COMPLETED = R_ACTION.format(event="check_run", action="completed")


@pytest.mark.parametrize(
    ("name", "external_id", "action", "identifier", "reason"),
    [
        ("lint", "ml-1", "requested_action", "rerun", R_NOT_OURS.format(name="lint")),
        ("skyrun", None, "requested_action", "rerun", R_NO_RUN),
        ("skyrun", "https://ci.example/1", "rerequested", None, R_NO_RUN),
        (
            "skyrun",
            "ml-1",
            "requested_action",
            "retry-all",
            R_BUTTON.format(identifier="retry-all"),
        ),
        ("skyrun", "ml-1", "requested_action", "rm -rf", R_BUTTON.format(identifier="rm -rf")),
        (
            "skyrun",
            "ml-1",
            "completed",
            None,
            R_ACTION.format(event="check_run", action="completed"),
        ),
    ],
)
def test_check_runs_skyrun_does_not_act_on_are_ignored(
    fake: FakeGitHub,
    name: str,
    external_id: str | None,
    action: str,
    identifier: str | None,
    reason: str,
) -> None:
    check = fake.add_check_run(REPO, fake.head(REPO), name=name, external_id=external_id)
    payload = fake.check_run_payload(check, action, sender="bob", identifier=identifier)
    assert route("check_run", "d-7", payload, ALL, host(fake)) == Ignore(reason)


def test_check_suite_actions_other_than_rerequested_are_ignored(fake: FakeGitHub) -> None:
    payload = fake.check_suite_payload(REPO, fake.head(REPO), sender="bob")
    payload["action"] = "completed"
    assert route("check_suite", "d-8", payload, ALL, host(fake)) == Ignore(
        R_ACTION.format(event="check_suite", action="completed")
    )
