"""Parsing `/skyrun` text, building run requests, and who may act (pure)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.slack import texts
from bot.slack.access import cancel_denial, repo_allowed, start_denial
from bot.slack.commands import (
    CancelCommand,
    HelpCommand,
    RunCommand,
    StatusCommand,
    UsageError,
    delivery_id,
    parse,
    run_request,
)
from worker.contract import RunState, SlackTarget, Trigger
from worker.gitrefs import P_DASH, P_DOTDOT, P_EMPTY
from worker.limits import MAX_COMMAND_CHARS, MAX_ENV_VALUE_CHARS, MAX_ENVS, MAX_STAGES
from worker.links import GitHubHost
from worker.runcontrol import RunSummary
from worker.settings import Settings

GITHUB = GitHubHost.from_api_url("https://api.github.com")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("acme/widgets", RunCommand("acme/widgets")),
        ("acme/widgets@main", RunCommand("acme/widgets", "main")),
        ("acme/widgets.git@release/1.2", RunCommand("acme/widgets", "release/1.2")),
        (
            "acme/widgets@dev train eval LR=0.01 NOTE=",
            RunCommand("acme/widgets", "dev", ("train", "eval"), {"LR": "0.01", "NOTE": ""}),
        ),
        (
            "acme/widgets MSG=\u201chello world\u201d train train",
            RunCommand("acme/widgets", "", ("train",), {"MSG": "hello world"}),
        ),
        ("acme/widgets URL=a&amp;b", RunCommand("acme/widgets", "", (), {"URL": "a&b"})),
        ("help", HelpCommand()),
        ("  HELP ", HelpCommand()),
        ("status", StatusCommand()),
        ("status widgets-1a2b3c4d5e", StatusCommand("widgets-1a2b3c4d5e")),
        (
            "status <http://skyrun.test/runs/widgets-1a2b3c4d5e|the run>",
            StatusCommand("widgets-1a2b3c4d5e"),
        ),
        ("cancel widgets-1a2b3c4d5e", CancelCommand("widgets-1a2b3c4d5e")),
        (
            "cancel https://skyrun.example/runs/widgets-1a2b3c4d5e?x=1",
            CancelCommand("widgets-1a2b3c4d5e"),
        ),
    ],
)
def test_commands_parse(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", texts.E_EMPTY),
        ("deploy", texts.E_UNKNOWN.format(word="deploy")),
        ("acme", texts.E_UNKNOWN.format(word="acme")),
        ("acme/widgets@", texts.E_REF.format(ref="", problem=P_EMPTY)),
        ("acme/widgets@a..b", texts.E_REF.format(ref="a..b", problem=P_DOTDOT)),
        ("acme/widgets@-rf", texts.E_REF.format(ref="-rf", problem=P_DASH)),
        ("../../etc/passwd", texts.E_UNKNOWN.format(word="../../etc/passwd")),
        ("acme/..", texts.E_UNKNOWN.format(word="acme/..")),
        ("acme/widgets tr@in", texts.E_STAGE.format(stage="tr@in")),
        ("acme/widgets 'unbalanced", None),
        ("acme/widgets 1X=2", None),
        ("status a b", texts.E_STATUS_ARGS),
        ("status ../etc", texts.E_RUN_ID.format(value="../etc")),
        ("cancel", texts.E_CANCEL_ARGS.format(command="/skyrun")),
        ("cancel a b", texts.E_CANCEL_ARGS.format(command="/skyrun")),
        ("help me", texts.E_HELP_ARGS),
    ],
)
def test_bad_commands_say_what_is_wrong(text: str, message: str | None) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    if message is not None:
        assert str(caught.value) == message
    else:
        assert str(caught.value)


def test_env_errors_never_echo_a_value() -> None:
    with pytest.raises(UsageError) as caught:
        parse("acme/widgets 1TOKEN=s3cret")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("acme/widgets A=" + "x" * (MAX_ENV_VALUE_CHARS + 1), f"{MAX_ENV_VALUE_CHARS:,}"),
        ("acme/widgets " + " ".join(f"K{i}=1" for i in range(MAX_ENVS + 1)), f"{MAX_ENVS:,}"),
        ("acme/widgets " + " ".join(f"s{i}" for i in range(MAX_STAGES + 1)), f"{MAX_STAGES:,}"),
        ("acme/widgets A=" + "x" * MAX_COMMAND_CHARS, f"{MAX_COMMAND_CHARS:,}"),
        ("acme/widgets@" + "b" * 300, "255"),
    ],
)
def test_limits_are_usage_errors_naming_the_limit(text: str, limit: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert limit in str(caught.value)
    assert "xxxxxxxxxx" not in str(caught.value)


def test_a_nul_or_control_character_in_a_ref_is_refused() -> None:
    for ref in ("main\x00x", "main\tx", "ma in"):
        with pytest.raises(UsageError, match="not a branch, tag or commit name"):
            parse(f"'acme/widgets@{ref}'")


def test_run_request_records_who_and_where_and_dedupes_on_the_trigger_id() -> None:
    command = parse("acme/widgets@main train LR=0.1")
    assert isinstance(command, RunCommand)
    request = run_request(
        command,
        github=GITHUB,
        user="U1",
        channel="C1",
        response_url="https://hooks.slack.com/x",
        delivery=delivery_id("123.456", "body"),
    )
    assert request.repo == "acme/widgets"
    assert request.clone_url == "https://github.com/acme/widgets.git"
    assert request.ref == "main" and request.commit == ""
    assert request.stages == ["train"] and request.envs == {"LR": "0.1"}
    assert request.trigger is Trigger.SLACK
    assert request.requested_by == "U1"
    assert request.lane == "acme/widgets#branch:main"
    assert request.delivery_id == "slack:123.456"
    assert request.slack == SlackTarget("C1", "U1", "https://hooks.slack.com/x")
    default = run_request(
        RunCommand("acme/widgets"),
        github=GITHUB,
        user="U1",
        channel="C1",
        response_url="",
        delivery="d",
    )
    assert default.lane == "acme/widgets#branch:default"
    assert delivery_id("", "same body") == delivery_id("", "same body")
    assert delivery_id("", "same body") != delivery_id("", "other body")


def test_repo_globs() -> None:
    assert repo_allowed(["*"], "acme/widgets")
    assert repo_allowed(["acme/*"], "Acme/Widgets")
    assert not repo_allowed(["acme/*"], "evil/widgets")
    assert not repo_allowed([], "acme/widgets")


def _run(requested_by: str, repo: str = "acme/widgets", trigger: str = "slack") -> RunSummary:
    return RunSummary(
        run_id="widgets-1",
        repo=repo,
        ref="main",
        commit="",
        trigger=trigger,
        requested_by=requested_by,
        state=RunState.RUNNING,
        pr_number=None,
        started_at=None,
        finished_at=None,
    )


def test_who_may_start_and_cancel(make_settings: Callable[..., Settings]) -> None:
    anyone = make_settings()
    assert start_denial(anyone, "U1", "acme/widgets") is None
    assert cancel_denial(anyone, "U2", _run("U1")) is None

    listed = make_settings(
        SKYRUN_SLACK_ALLOWED_USERS="U0ADMIN, U0OPS", SKYRUN_ALLOWED_REPOS="acme/*"
    )
    assert start_denial(listed, "U0OPS", "acme/widgets") is None
    assert start_denial(listed, "U1", "acme/widgets") == texts.DENIED_USER.format(user="U1")
    assert start_denial(listed, "U0OPS", "evil/x") == texts.DENIED_REPO.format(repo="evil/x")
    # The starter may cancel their own run even when not (or no longer) on the list.
    assert cancel_denial(listed, "U1", _run("U1")) is None
    assert cancel_denial(listed, "U0ADMIN", _run("U1")) is None
    denial = cancel_denial(listed, "U2", _run("U1"))
    assert denial == texts.DENIED_CANCEL.format(run_id="widgets-1", starter="<@U1>")
    push = cancel_denial(listed, "U2", _run("octocat", trigger="push"))
    assert push == texts.DENIED_CANCEL.format(run_id="widgets-1", starter="octocat")
    assert cancel_denial(listed, "U0ADMIN", _run("U1", repo="evil/x")) is not None
