"""Route one verified GitHub delivery to what skyrun does about it: pure, no I/O.

The payload is validated first against the models of bot/github/payloads.py (the fields skyrun
reads, strictly typed); a wrong shape raises PayloadError naming the fields. Clone URLs are built
from the configured GitHub host, never taken from the payload.

A merge queue group runs in a lane of its own (never superseding a branch's or a pull request's
runs); a check run's button (`rerun`, `cancel`, `retry`) and GitHub's Re-run of a check run or suite
become commands the worker authorizes exactly like a `/skyrun` comment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.github.payloads import (
    CheckRunEvent,
    CheckSuiteEvent,
    Delivery,
    IssueCommentEvent,
    MergeGroupEvent,
    PullNumber,
    PullRequestEvent,
    PushEvent,
)
from worker.commands import CommandError, CommandKind, parse_comment, repo_allowed
from worker.contract import (
    GitHubTarget,
    RunRequest,
    Trigger,
    lane_for_branch,
    lane_for_merge_group,
    lane_for_pr,
)
from worker.github.contract import MARKER, CommandSource, GitHubCommand
from worker.github.texts import CHECK_NAME
from worker.links import GitHubHost

R_EVENT = "event {event} is not handled"
R_ACTION = "{event} action {action} is not handled"
R_NO_REPO = "the delivery names no repository"
R_NOT_ALLOWED = "repository {repo} is not in SKYRUN_ALLOWED_REPOS"
R_TAG = "tag pushes do not start runs"
R_DELETED = "branch deletions do not start runs"
R_NOT_BRANCH = "only pushes to branches start runs (got {ref})"
R_NOT_PR = "comments on issues are ignored; only pull request comments are commands"
R_NOT_NEW = "only new comments are commands (this one was {action})"
R_BOT = "comments by bots, skyrun included, are ignored"
R_NOT_COMMAND = "the comment's first line is not a /skyrun command"
R_FORK = "pull requests from forks run only through a maintainer's /skyrun comment"
R_CLOSED = "the pull request was closed"
R_MERGE_GROUP_DESTROYED = "the merge group was destroyed ({reason})"
R_NOT_OURS = "check run {name} is not skyrun's"
R_NO_RUN = "the check run names no skyrun run (no external_id)"
R_NO_SENDER = "the delivery names no sender, so no permission can be checked"
R_BUTTON = "check run action {identifier} is not one skyrun offers"
E_PAYLOAD = "unexpected {event} payload: {problem}"
MAX_PROBLEMS = 3
MAX_EVENT_CHARS = 64
"""The X-GitHub-Event header is echoed in the answer; GitHub's event names are short."""

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"
NULL_SHA = "0" * 40
PR_RUN_ACTIONS = ("opened", "synchronize", "reopened")
BUTTONS = {
    "rerun": CommandKind.RUN,
    "cancel": CommandKind.CANCEL,
    "retry": CommandKind.RETRY,
}
"""The check run's requested actions (identifiers) and what each does."""
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""The shape of a run id (worker/contract.run_id_for); another external id names no run."""


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class StartRun:
    request: RunRequest


@dataclass(frozen=True)
class CancelLane:
    lane: str
    reason: str


@dataclass(frozen=True)
class StartCommand:
    """A `/skyrun` comment: the worker authorizes, resolves the commit, acts and replies."""

    command: GitHubCommand


Action = Ignore | StartRun | CancelLane | StartCommand


class PayloadError(ValueError):
    """The body is JSON but not the shape GitHub sends for its event."""


def route(
    event: str,
    delivery_id: str,
    payload: dict[str, Any],
    allowed: Sequence[str],
    github: GitHubHost,
) -> Action:
    """What to do about a verified delivery (raises PayloadError when its shape is wrong)."""
    handler = _HANDLERS.get(event)
    if handler is None:
        return Ignore(R_EVENT.format(event=event[:MAX_EVENT_CHARS] or "(none)"))
    model, handle = handler
    try:
        parsed = model.model_validate(payload)
    except ValidationError as err:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]
        )
        raise PayloadError(E_PAYLOAD.format(event=event, problem=problem)) from None
    if parsed.repository is None:
        return Ignore(R_NO_REPO)
    if not repo_allowed(parsed.repository.full_name, allowed):
        return Ignore(R_NOT_ALLOWED.format(repo=parsed.repository.full_name))
    return handle(parsed, delivery_id, github)


def _installation(delivery: Delivery) -> int | None:
    return delivery.installation.id if delivery.installation else None


def _run_of(event: Delivery, delivery_id: str, host: GitHubHost, **fields: Any) -> StartRun:
    """A run of the delivery's repository, cloned from the configured GitHub host only."""
    assert event.repository is not None
    repo = event.repository
    return StartRun(
        RunRequest(
            repo=repo.full_name,
            clone_url=host.clone_url(repo.full_name),
            delivery_id=delivery_id,
            default_branch=repo.default_branch,
            **fields,
        )
    )


def on_push(event: PushEvent, delivery_id: str, github: GitHubHost) -> Action:
    assert event.repository is not None
    if event.ref.startswith(TAG_PREFIX):
        return Ignore(R_TAG)
    if not event.ref.startswith(BRANCH_PREFIX):
        return Ignore(R_NOT_BRANCH.format(ref=event.ref))
    if event.deleted or event.after == NULL_SHA:
        return Ignore(R_DELETED)
    repo = event.repository
    branch = event.ref.removeprefix(BRANCH_PREFIX)
    return _run_of(
        event,
        delivery_id,
        github,
        ref=branch,
        commit=event.after,
        trigger=Trigger.PUSH,
        requested_by=event.sender.login if event.sender else "",
        lane=lane_for_branch(repo.full_name, branch),
        github=GitHubTarget(installation_id=_installation(event)),
        check_push_filter=True,
    )


def is_bot(login: str, user_type: str, body: str) -> bool:
    return user_type == "Bot" or login.endswith("[bot]") or body.lstrip().startswith(MARKER)


def on_issue_comment(event: IssueCommentEvent, delivery_id: str, github: GitHubHost) -> Action:
    assert event.repository is not None
    if event.action != "created":
        return Ignore(R_NOT_NEW.format(action=event.action))
    if event.issue.pull_request is None:
        return Ignore(R_NOT_PR)
    comment = event.comment
    if is_bot(comment.user.login, comment.user.type, comment.body):
        return Ignore(R_BOT)
    try:
        parsed = parse_comment(comment.body)
    except CommandError as err:
        action, error, stages, envs, sweep = CommandKind.USAGE, str(err), [], {}, []
    else:
        if parsed is None:
            return Ignore(R_NOT_COMMAND)
        action, error = parsed.kind, ""
        stages, envs, sweep = list(parsed.stages), dict(parsed.envs), list(parsed.sweep)
    repo = event.repository
    return StartCommand(
        GitHubCommand(
            action=action,
            repo=repo.full_name,
            clone_url=github.clone_url(repo.full_name),
            pr_number=event.issue.number,
            comment_id=comment.id,
            comment_created_at=comment.created_at,
            requested_by=comment.user.login,
            delivery_id=delivery_id,
            installation_id=_installation(event),
            default_branch=repo.default_branch,
            stages=stages,
            envs=envs,
            error=error,
            sweep=sweep,
        )
    )


def on_pull_request(event: PullRequestEvent, delivery_id: str, github: GitHubHost) -> Action:
    assert event.repository is not None
    repo = event.repository
    lane = lane_for_pr(repo.full_name, event.number)
    if event.action == "closed":
        return CancelLane(lane, R_CLOSED)
    if event.action not in PR_RUN_ACTIONS:
        return Ignore(R_ACTION.format(event="pull_request", action=event.action))
    pr = event.pull_request
    head_repo = pr.head.repo.full_name if pr.head.repo else ""
    if head_repo.lower() != repo.full_name.lower():
        return Ignore(R_FORK)
    return _run_of(
        event,
        delivery_id,
        github,
        ref=pr.head.ref,
        commit=pr.head.sha,
        trigger=Trigger.PULL_REQUEST,
        requested_by=pr.user.login,
        lane=lane,
        github=GitHubTarget(
            installation_id=_installation(event),
            pr_number=event.number,
            base_branch=pr.base.ref,
            head_repo=head_repo,
        ),
        check_pr_filter=True,
    )


def on_merge_group(event: MergeGroupEvent, delivery_id: str, github: GitHubHost) -> Action:
    assert event.repository is not None
    repo = event.repository
    group = event.merge_group
    head = group.head_ref.removeprefix(BRANCH_PREFIX)
    lane = lane_for_merge_group(repo.full_name, head)
    if event.action == "destroyed":
        return CancelLane(lane, R_MERGE_GROUP_DESTROYED.format(reason=event.reason or "no reason"))
    if event.action != "checks_requested":
        return Ignore(R_ACTION.format(event="merge_group", action=event.action))
    return _run_of(
        event,
        delivery_id,
        github,
        ref=head,
        commit=group.head_sha,
        trigger=Trigger.MERGE_GROUP,
        requested_by=event.sender.login if event.sender else "",
        lane=lane,
        github=GitHubTarget(
            installation_id=_installation(event),
            base_branch=group.base_ref.removeprefix(BRANCH_PREFIX),
        ),
    )


def _check_command(
    event: CheckRunEvent | CheckSuiteEvent,
    delivery_id: str,
    github: GitHubHost,
    *,
    action: CommandKind,
    source: CommandSource,
    pulls: list[PullNumber],
    head_sha: str,
    run_id: str = "",
    check_run_id: int = 0,
) -> StartCommand:
    assert event.repository is not None
    repo = event.repository
    return StartCommand(
        GitHubCommand(
            action=action,
            repo=repo.full_name,
            clone_url=github.clone_url(repo.full_name),
            pr_number=pulls[0].number if pulls else 0,
            comment_id=0,
            comment_created_at="",
            requested_by=event.sender.login if event.sender else "",
            delivery_id=delivery_id,
            installation_id=_installation(event),
            default_branch=repo.default_branch,
            source=source,
            run_id=run_id,
            check_run_id=check_run_id,
            head_sha=head_sha,
        )
    )


def on_check_run(event: CheckRunEvent, delivery_id: str, github: GitHubHost) -> Action:
    check = event.check_run
    if event.action == "requested_action":
        identifier = event.requested_action.identifier if event.requested_action else ""
        if identifier not in BUTTONS:
            return Ignore(R_BUTTON.format(identifier=identifier[:MAX_EVENT_CHARS] or "(none)"))
        action, source = BUTTONS[identifier], CommandSource.BUTTON
    elif event.action == "rerequested":
        action, source = CommandKind.RUN, CommandSource.RERUN
    else:
        return Ignore(R_ACTION.format(event="check_run", action=event.action))
    if check.name != CHECK_NAME:
        return Ignore(R_NOT_OURS.format(name=check.name[:MAX_EVENT_CHARS]))
    if not check.external_id or not RUN_ID_RE.fullmatch(check.external_id):
        return Ignore(R_NO_RUN)
    if event.sender is None:
        return Ignore(R_NO_SENDER)
    return _check_command(
        event,
        delivery_id,
        github,
        action=action,
        source=source,
        pulls=check.pull_requests,
        head_sha=check.head_sha,
        run_id=check.external_id,
        check_run_id=check.id,
    )


def on_check_suite(event: CheckSuiteEvent, delivery_id: str, github: GitHubHost) -> Action:
    if event.action != "rerequested":
        return Ignore(R_ACTION.format(event="check_suite", action=event.action))
    if event.sender is None:
        return Ignore(R_NO_SENDER)
    suite = event.check_suite
    return _check_command(
        event,
        delivery_id,
        github,
        action=CommandKind.RUN,
        source=CommandSource.RERUN,
        pulls=suite.pull_requests,
        head_sha=suite.head_sha,
    )


_HANDLERS: dict[str, tuple[type[Delivery], Callable[[Any, str, GitHubHost], Action]]] = {
    "push": (PushEvent, on_push),
    "issue_comment": (IssueCommentEvent, on_issue_comment),
    "pull_request": (PullRequestEvent, on_pull_request),
    "merge_group": (MergeGroupEvent, on_merge_group),
    "check_run": (CheckRunEvent, on_check_run),
    "check_suite": (CheckSuiteEvent, on_check_suite),
}
