"""`POST /github/webhook` over HTTP: every rejection, and what it starts (no worker)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client

from bot.github.events import R_NOT_ALLOWED
from bot.github.signature import HEADER, SHA1_HEADER, sign
from bot.github.webhook import (
    E_BAD_SIGNATURE,
    E_NO_SECRET,
    E_NO_SIGNATURE,
    E_NOT_JSON,
    E_SHA1_ONLY,
    E_TOO_LARGE,
    MAX_BODY_BYTES,
    PATH,
    R_DUPLICATE,
)
from tests.worker.github.stack import SECRET, Stack, github_stack, unique_repo
from worker.github.contract import COMMAND_WORKFLOW, DELIVERY_WORKFLOW, delivery_workflow_id
from worker.settings import Settings


@pytest.fixture
async def bot(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Stack]:
    """The bot with no worker: what it starts stays queued, and is terminated afterwards."""
    async with github_stack(client, make_settings, tmp_path, worker=False) as stack:
        yield stack
        async for execution in client.list_workflows(
            f"TaskQueue = '{stack.settings.temporal_task_queue}' AND ExecutionStatus = 'Running'"
        ):
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(execution.id).terminate("test over")


def rejected(event: str) -> float:
    labels = {"event": event, "outcome": "rejected"}
    return REGISTRY.get_sample_value("skyrun_webhooks_total", labels) or 0.0


def push_body(bot: Stack) -> tuple[str, bytes]:
    repo = unique_repo()
    bot.fake.add_repo(repo, {"README.md": "hi"})
    payload = bot.fake.push_payload(repo, "refs/heads/main", bot.fake.head(repo), sender="alice")
    return repo, json.dumps(payload).encode()


async def post(bot: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await bot.http.post(PATH, content=body, headers={"X-GitHub-Event": "push", **headers})


async def test_signatures_are_checked_before_anything_else(bot: Stack) -> None:
    repo, body = push_body(bot)
    before = rejected("push")
    cases = [
        ({}, E_NO_SIGNATURE),
        ({SHA1_HEADER: "sha1=" + "0" * 40}, E_SHA1_ONLY),
        ({HEADER: sign("another secret", body)}, E_BAD_SIGNATURE),
        ({HEADER: sign(SECRET, body).replace("sha256=", "sha512=")}, E_BAD_SIGNATURE),
        ({HEADER: sign(SECRET, body + b" ")}, E_BAD_SIGNATURE),
        ({HEADER: "sha256=not-hex"}, E_BAD_SIGNATURE),
    ]
    for headers, reason in cases:
        response = await post(bot, body, headers)
        assert response.status_code == 401, headers
        assert response.json() == {"outcome": "rejected", "reason": reason}
    assert await bot.dispatcher.list_runs(repo=repo) == []
    assert rejected("push") == before + len(cases)


async def test_without_a_secret_everything_is_refused(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(
        client, make_settings, tmp_path, worker=False, GITHUB_WEBHOOK_SECRET=None
    ) as bot:
        repo, body = push_body(bot)
        for event in ("ping", "push"):
            response = await bot.http.post(
                PATH, content=body, headers={"X-GitHub-Event": event, HEADER: sign(SECRET, body)}
            )
            assert response.status_code == 401
            assert response.json()["reason"] == E_NO_SECRET
        assert await bot.dispatcher.list_runs(repo=repo) == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
async def test_a_malformed_body_is_a_bad_request(bot: Stack, body: bytes) -> None:
    response = await post(bot, body, {HEADER: sign(SECRET, body)})
    assert response.status_code == 400
    assert response.json()["reason"] == E_NOT_JSON


async def test_a_body_of_the_wrong_shape_is_a_bad_request(bot: Stack) -> None:
    body = json.dumps({"repository": {"full_name": "acme/ml"}}).encode()
    response = await post(bot, body, {HEADER: sign(SECRET, body)})
    assert response.status_code == 400
    assert response.json()["reason"].startswith("unexpected push payload: ref: Field required")


async def test_oversize_bodies_are_refused_without_reading_them(bot: Stack) -> None:
    sent: list[int] = []

    async def chunks(total: int) -> AsyncIterator[bytes]:
        chunk = b"x" * (1024 * 1024)
        for _ in range(total):
            sent.append(len(chunk))
            yield chunk

    declared = await post(
        bot, b"", {"Content-Length": str(MAX_BODY_BYTES + 1), HEADER: sign(SECRET, b"")}
    )
    assert declared.status_code == 413
    assert declared.json()["reason"] == E_TOO_LARGE

    # No Content-Length (chunked): the read stops once past the cap, not at the end.
    streamed = await bot.http.post(
        PATH, content=chunks(100), headers={"X-GitHub-Event": "push", HEADER: "sha256=x"}
    )
    assert streamed.status_code == 413
    assert sum(sent) <= MAX_BODY_BYTES + 2 * 1024 * 1024


async def test_ping_and_unhandled_events_are_answered_with_a_reason(bot: Stack) -> None:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    for event, outcome, reason in [
        ("ping", "replied", "pong"),
        ("star", "ignored", "event star is not handled"),
    ]:
        response = await bot.http.post(
            PATH, content=body, headers={"X-GitHub-Event": event, HEADER: sign(SECRET, body)}
        )
        assert response.status_code == 200
        assert response.json() == {"outcome": outcome, "reason": reason}


async def test_repositories_not_allowed_are_ignored(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(
        client, make_settings, tmp_path, worker=False, SKYRUN_ALLOWED_REPOS="other/*"
    ) as bot:
        repo, body = push_body(bot)
        response = await post(bot, body, {HEADER: sign(SECRET, body)})
        assert response.status_code == 200
        assert response.json() == {"outcome": "ignored", "reason": R_NOT_ALLOWED.format(repo=repo)}
        assert await bot.dispatcher.list_runs(repo=repo) == []


async def test_a_push_is_handed_to_the_worker_once_per_delivery(bot: Stack) -> None:
    repo, body = push_body(bot)
    headers = {HEADER: sign(SECRET, body), "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-1"}

    first = await post(bot, body, headers)
    again = await post(bot, body, headers)

    workflow_id = delivery_workflow_id("72d3162e-cc78-11e3-81ab-1")
    assert first.status_code == 202
    assert first.json() == {
        "outcome": "accepted",
        "run": f"{repo}#branch:main",
        "workflow_id": workflow_id,
    }
    assert again.status_code == 200
    assert again.json() == {
        "outcome": "duplicate",
        "reason": R_DUPLICATE,
        "workflow_id": workflow_id,
    }
    description = await bot.client.get_workflow_handle(workflow_id).describe()
    assert description.workflow_type == DELIVERY_WORKFLOW


async def test_without_a_delivery_id_the_body_identifies_the_delivery(bot: Stack) -> None:
    _, body = push_body(bot)
    first = await post(bot, body, {HEADER: sign(SECRET, body)})
    again = await post(bot, body, {HEADER: sign(SECRET, body)})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["workflow_id"] == again.json()["workflow_id"]


async def test_a_comment_command_is_handed_to_the_worker_once(bot: Stack) -> None:
    repo = unique_repo()
    bot.fake.add_repo(repo, {"README.md": "hi"})
    pull = bot.fake.open_pull(repo, "main", user="alice")
    payload = bot.fake.comment_payload(bot.fake.add_comment(repo, pull.number, "alice", "/skyrun"))

    first = await bot.deliver("issue_comment", payload, delivery="delivery-9")
    again = await bot.deliver("issue_comment", payload, delivery="delivery-9")

    workflow_id = delivery_workflow_id("delivery-9")
    assert first.status_code == 202
    assert first.json() == {"outcome": "accepted", "command": "run", "workflow_id": workflow_id}
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    description = await bot.client.get_workflow_handle(workflow_id).describe()
    assert description.workflow_type == COMMAND_WORKFLOW
    assert bot.fake.requests == []  # the bot never calls GitHub
