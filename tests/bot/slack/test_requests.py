"""What a signed request to /slack/events must look like before Bolt sees it (pure)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.slack.requests import (
    BLOCK_ACTIONS,
    COMMAND,
    E_ENCODING,
    E_NOT_JSON,
    E_TOO_DEEP,
    NOT_HANDLED,
    SSL_CHECK,
    URL_VERIFICATION,
    RequestError,
    checked,
)
from tests.fakes.slack import block_action, slash_command
from worker.slack.blocks import cancel_button

FORM = "application/x-www-form-urlencoded"


def test_what_slack_sends_passes_and_says_its_kind() -> None:
    command = slash_command("help", response_url="https://hooks.slack.com/x").encode()
    click = block_action(cancel_button("run-1"), response_url="https://hooks.slack.com/x").encode()
    assert checked(command, FORM) == COMMAND
    assert checked(click, FORM) == BLOCK_ACTIONS
    assert checked(b"ssl_check=1&token=x", FORM) == SSL_CHECK
    challenge = json.dumps({"type": "url_verification", "challenge": "abc"}).encode()
    assert checked(challenge, "application/json") == URL_VERIFICATION


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", E_ENCODING),
        (b"payload=%7Bnope", E_NOT_JSON),
        (b"payload=" + b"[" * 10_000, E_TOO_DEEP),
        (urlencode({"payload": "[]"}).encode(), E_NOT_JSON),
        (b'{"type": "block_actions", "user": {"id": "U1"}, "actions": {}}', "actions"),
        (b'{"type": "block_actions", "user": {"id": "U1"}, "actions": [{}]}', "action_id"),
        (b'{"type": "event_callback", "event": []}', "event"),
    ],
)
def test_what_slack_never_sends_is_a_400_naming_it(body: bytes, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        checked(body, None)
    assert caught.value.status == 400
    assert message in str(caught.value)


def test_kinds_skyrun_does_not_handle_are_a_404() -> None:
    for payload in (
        {"type": "view_submission"},
        {"type": "event_callback", "event": {"type": "x"}},
    ):
        with pytest.raises(RequestError, match=NOT_HANDLED) as caught:
            checked(json.dumps(payload).encode(), "application/json")
        assert caught.value.status == 404


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "a"}]},
        {
            "type": "block_actions",
            "user": {"id": "U1", "team_id": "T1"},
            "team": "T1",
            "enterprise": {"id": "E1"},
            "channel": {"id": "C1"},
            "container": {"message_ts": "1.2", "is_ephemeral": True},
            "authorizations": [{"team_id": "T1", "is_enterprise_install": False}],
            "actions": [{"action_id": "a", "value": "v"}],
        },
    ],
)
def test_what_passes_bolt_can_read(payload: dict[str, object]) -> None:
    body = urlencode({"payload": json.dumps(payload)})
    assert checked(body.encode(), FORM) == BLOCK_ACTIONS
    request = AsyncBoltRequest(body=body, headers={"content-type": FORM})
    assert request.context.user_id == "U1"
