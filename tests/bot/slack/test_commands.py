"""A parsed slash `run` command as a run request, and Slack request identity (pure)."""

from __future__ import annotations

from bot.slack.commands import delivery_id, run_request
from worker.commands import Command, CommandKind, Host, parse
from worker.contract import SlackTarget, Trigger
from worker.links import GitHubHost

GITHUB = GitHubHost.from_api_url("https://api.github.com")


def test_run_request_records_who_and_where_and_dedupes_on_the_trigger_id() -> None:
    command = parse("acme/widgets@main train LR=0.1", Host.SLASH)
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
        Command(CommandKind.RUN, repo="acme/widgets"),
        github=GITHUB,
        user="U1",
        channel="C1",
        response_url="",
        delivery="d",
    )
    assert default.lane == "acme/widgets#branch:default"


def test_clone_urls_come_from_the_configured_host() -> None:
    command = parse("acme/widgets.git@dev", Host.SLASH)
    ghe = GitHubHost.from_api_url("https://api.acme.ghe.com")
    request = run_request(
        command, github=ghe, user="U1", channel="C1", response_url="", delivery="d"
    )
    assert request.clone_url == "https://acme.ghe.com/acme/widgets.git"


def test_without_a_trigger_id_the_body_identifies_the_request() -> None:
    assert delivery_id("", "same body") == delivery_id("", "same body")
    assert delivery_id("", "same body") != delivery_id("", "other body")
    assert delivery_id("", "x").startswith("slack:")
    assert delivery_id("1.2", "x") == delivery_id("1.2", "y") == "slack:1.2"
