"""The fields of GitHub's payloads skyrun reads, validated strictly (pure)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from bot.github.events import PayloadError, route
from bot.github.payloads import (
    MAX_ID,
    P_LOGIN,
    P_TIME,
    P_UTF8,
    Delivery,
    IssueCommentEvent,
    PullRequestEvent,
    PushEvent,
)
from tests.bot.github.helpers import ALL, REPO, comment_payload, host
from tests.fakes.github import FakeGitHub
from worker.limits import MAX_COMMENT_CHARS


def problems(model: type[Delivery], payload: dict[str, Any]) -> list[str]:
    """`field.path: message` for each problem pydantic finds (none: the payload is valid)."""
    try:
        model.model_validate(payload)
    except ValidationError as err:
        return [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors(include_url=False, include_input=False)
        ]
    return []


def test_what_the_fake_github_sends_is_valid(fake: FakeGitHub) -> None:
    sha = fake.commit(REPO, {"a.txt": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="alice")
    assert (
        problems(PushEvent, fake.push_payload(REPO, "refs/heads/feature", sha, sender="alice"))
        == []
    )
    assert problems(PullRequestEvent, fake.pull_request_payload(pull, "opened")) == []
    assert problems(IssueCommentEvent, comment_payload(fake, "/skyrun")) == []
    push = PushEvent.model_validate(
        fake.push_payload(REPO, "refs/heads/feature", sha.upper(), sender="alice")
    )
    assert push.after == sha  # SHAs are compared lower-case


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (
            ("pull_request", "head", "sha"),
            "--upload-pack=touch /tmp/pwned",
            "pull_request.head.sha",
        ),
        (("pull_request", "head", "ref"), "-x", "pull_request.head.ref"),
        (("pull_request", "base", "ref"), "main\x00", "pull_request.base.ref"),
        (("pull_request", "head", "repo", "full_name"), "/tmp/repo", "pull_request.head.repo"),
        (("pull_request", "user", "login"), "a/../b", "pull_request.user.login"),
        (("number",), "7", "number"),
        (("number",), 0, "number"),
    ],
)
def test_pull_request_values_github_never_sends_are_refused(
    fake: FakeGitHub, path: tuple[str, ...], value: object, field: str
) -> None:
    fake.commit(REPO, {"a.txt": "1"}, branch="feature")
    payload = fake.pull_request_payload(fake.open_pull(REPO, "feature", user="alice"), "opened")
    node: Any = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    [problem] = problems(PullRequestEvent, payload)
    assert problem.startswith(field)
    with pytest.raises(PayloadError, match=re.escape(f"unexpected pull_request payload: {field}")):
        route("pull_request", "d", payload, ALL, host(fake))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("comment", "user", "login"), "alice?x=1", P_LOGIN),
        (("comment", "created_at"), "yesterday", P_TIME),
        (("comment", "body"), "lone \ud800", P_UTF8),
        (("comment", "id"), MAX_ID + 1, "less than or equal to"),
        (("comment", "id"), True, "integer"),
        (("repository", "full_name"), "acme/..", "not a repository name"),
        (("repository", "default_branch"), "a..b", "not a valid git ref name"),
    ],
)
def test_comment_values_github_never_sends_name_the_field(
    fake: FakeGitHub, path: tuple[str, ...], value: object, message: str
) -> None:
    payload = comment_payload(fake, "/skyrun")
    node: Any = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    [problem] = problems(IssueCommentEvent, payload)
    assert problem.startswith(".".join(path) + ": ") and message in problem


def test_a_comment_past_githubs_limit_is_refused_before_it_is_parsed(fake: FakeGitHub) -> None:
    payload = comment_payload(fake, "/skyrun " + "'" * 70_000)
    with pytest.raises(PayloadError, match=r"comment\.body: the comment is 70,008 characters"):
        route("issue_comment", "d", payload, ALL, host(fake))
    at_limit = comment_payload(fake, "x" * MAX_COMMENT_CHARS)
    assert problems(IssueCommentEvent, at_limit) == []
