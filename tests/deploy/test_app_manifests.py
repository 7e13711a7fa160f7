"""deploy/github-app.yml and deploy/slack-app.yml: permissions, events and URLs skyrun needs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from bot.github.webhook import PATH as WEBHOOK_PATH
from tests.deploy.conftest import DEPLOY

SLACK_PATH = "/slack/events"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


def test_github_app_asks_for_what_skyrun_uses_and_no_more() -> None:
    app = load("github-app.yml")
    assert app["default_permissions"] == {
        "checks": "write",
        "contents": "read",
        "issues": "write",
        "pull_requests": "write",
        "metadata": "read",
        "merge_queues": "read",
    }
    assert sorted(app["default_events"]) == [
        "check_run",
        "check_suite",
        "issue_comment",
        "merge_group",
        "pull_request",
        "push",
    ]
    assert app["hook_attributes"]["active"] is True
    assert urlsplit(app["hook_attributes"]["url"]).path == WEBHOOK_PATH
    assert app["public"] is False


def test_slack_app_sends_the_command_and_interactions_to_the_bot() -> None:
    app = load("slack-app.yml")
    (command,) = app["features"]["slash_commands"]
    assert command["command"] == "/skyrun"
    assert urlsplit(command["url"]).path == SLACK_PATH
    interactivity = app["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"] == command["url"]
    assert {"commands", "chat:write"} <= set(app["oauth_config"]["scopes"]["bot"])
    assert app["settings"]["socket_mode_enabled"] is False  # requests come over HTTPS


def test_both_apps_point_at_the_same_public_url() -> None:
    github = urlsplit(load("github-app.yml")["hook_attributes"]["url"])
    slack = urlsplit(load("slack-app.yml")["features"]["slash_commands"][0]["url"])
    assert (github.scheme, github.netloc) == (slack.scheme, slack.netloc)
    assert github.scheme == "https"
