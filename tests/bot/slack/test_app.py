"""The Slack front door over HTTP: verification, commands, acks and permissions.

Real Temporal, no worker: runs started here stay queued; each test uses its own repository name
and terminates what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

import httpx
import pytest
from starlette.applications import Starlette
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bot.app import create_app
from bot.slack import texts
from bot.slack.app import MAX_BODY_BYTES, SLACK_OFF, routes
from bot.slack.requests import E_ENCODING, E_NOT_JSON, E_TOO_DEEP, NOT_HANDLED
from bot.state import BotState
from tests.bot.mutations import dotted, mutations
from tests.bot.slack.helpers import ack_text, serving, started_request, terminate_runs
from tests.fakes.slack import (
    FakeSlack,
    Message,
    block_action,
    deliver,
    signed_headers,
    slash_command,
)
from worker.commands import (
    E_BAD_RUN_ID,
    E_BAD_TARGET,
    E_EMPTY_TARGET,
    E_NEEDS_RUN,
    E_TOO_MANY,
    Host,
    check_env,
    quoted,
    usage,
)
from worker.contract import RunRequest, SlackTarget, Trigger, lane_for_branch
from worker.limits import MAX_COMMAND_CHARS, MAX_ENV_VALUE_CHARS
from worker.logstore import LogStore
from worker.runcontrol import RunControl, StartOutcome
from worker.settings import Settings
from worker.slack.blocks import cancel_button

ACK_BUDGET_S = 1.0
"""Slack gives up after 3 s; acknowledgements must come far sooner."""


# Verification: nothing unsigned, stale or off gets through.


async def test_route_is_off_without_slack_settings(
    client: Client, make_settings: Callable[..., Settings], slack: FakeSlack
) -> None:
    async with serving(create_app(make_settings(), client)) as http:
        response = await deliver(http, slash_command("help", response_url=slack.response_url()))
    assert response.status_code == 404
    assert response.text == SLACK_OFF


@pytest.mark.parametrize("fault", ["bad signature", "stale timestamp", "missing headers"])
async def test_unverified_requests_get_401_and_start_nothing(
    bot: httpx.AsyncClient, client: Client, slack: FakeSlack, repo: str, fault: str
) -> None:
    body = slash_command(repo, response_url=slack.response_url())
    if fault == "bad signature":
        response = await deliver(bot, body, secret="not-the-secret")
    elif fault == "stale timestamp":
        response = await deliver(bot, body, timestamp=int(time.time()) - 6 * 60)
    else:
        response = await bot.post(
            "/slack/events",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 401
    await asyncio.sleep(0.3)
    assert await RunControl(client, "").list_runs(repo=repo) == []
    assert slack.calls == []


async def test_a_tampered_body_is_refused(bot: httpx.AsyncClient, slack: FakeSlack) -> None:
    body = slash_command("help", response_url=slack.response_url())
    headers = signed_headers(body)
    response = await bot.post("/slack/events", content=body + "&text=cancel+x", headers=headers)
    assert response.status_code == 401


# Commands answered in the acknowledgement.


async def test_help_and_usage_errors_are_answered_at_once(
    bot: httpx.AsyncClient, slack: FakeSlack
) -> None:
    help_text = usage(Host.SLASH)
    assert ack_text(await deliver(bot, slash_command("help", response_url="x"))) == help_text
    for text, error in [
        ("", E_EMPTY_TARGET.format(command="/skyrun")),
        ("deploy now", E_BAD_TARGET.format(word="'deploy'")),
        ("cancel", E_NEEDS_RUN.format(command="cancel", name="/skyrun")),
        ("status a b", E_TOO_MANY.format(command="status", extra="'a' 'b'")),
    ]:
        reply = ack_text(await deliver(bot, slash_command(text, response_url="x")))
        sentence = error[:1].upper() + error[1:]
        assert reply == texts.USAGE_ERROR.format(error=sentence, usage=help_text)
    empty = ack_text(await deliver(bot, slash_command("", response_url="x")))
    assert empty.startswith(":warning: Say which repository to run, as in `/skyrun OWNER/")
    renamed = ack_text(
        await deliver(bot, slash_command("cancel", response_url="x", command="/skyrun-dev"))
    )
    assert "`/skyrun-dev cancel RUN`" in renamed
    renamed = ack_text(
        await deliver(bot, slash_command("help", response_url="x", command="/skyrun-dev"))
    )
    assert "`/skyrun-dev status [RUN]`" in renamed
    assert slack.calls == []


async def test_users_outside_the_allow_list_start_nothing(
    client: Client,
    slack_settings: Callable[..., Settings],
    slack: FakeSlack,
    repo: str,
) -> None:
    settings = slack_settings(SKYRUN_SLACK_ALLOWED_USERS="U0ADMIN", SKYRUN_ALLOWED_REPOS="acme/*")
    async with serving(create_app(settings, client)) as http:
        stranger = await deliver(
            http, slash_command(repo, user="U0MALLORY", response_url=slack.response_url())
        )
        elsewhere = await deliver(
            http, slash_command("evil/repo", user="U0ADMIN", response_url=slack.response_url())
        )
    assert ack_text(stranger) == texts.DENIED_USER.format(user="U0MALLORY")
    assert ack_text(elsewhere) == texts.DENIED_REPO.format(repo="evil/repo")
    await asyncio.sleep(0.3)
    assert await RunControl(client, "").list_runs(repo=repo) == []
    assert slack.calls == []


# Starting runs.


class GatedDispatcher(RunControl):
    """A RunControl whose start waits until the test opens the gate (a slow Temporal)."""

    def __init__(self, client: Client, task_queue: str) -> None:
        super().__init__(client, task_queue)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def start(self, request: RunRequest) -> StartOutcome:
        self.entered.set()
        await self.gate.wait()
        return await super().start(request)


async def test_the_ack_comes_at_once_while_the_start_is_slow(
    client: Client, slack_settings: Callable[..., Settings], slack: FakeSlack, repo: str
) -> None:
    settings = slack_settings()
    control = GatedDispatcher(client, settings.temporal_task_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.bot = BotState(settings, client, control, LogStore(settings.logs_dir))
        yield

    app = Starlette(routes=routes(settings), lifespan=lifespan)
    response_url = slack.response_url("slow")
    async with serving(app) as http:
        began = time.monotonic()
        response = await deliver(http, slash_command(f"{repo}@main", response_url=response_url))
        elapsed = time.monotonic() - began
        assert ack_text(response).startswith(":hourglass_flowing_sand: Starting")
        assert elapsed < ACK_BUDGET_S
        await asyncio.wait_for(control.entered.wait(), 5)
        assert slack.responses("slow") == []

        control.gate.set()
        await slack.wait_for(lambda: slack.responses("slow"), 20, "the start's reply")
    [reply] = slack.responses("slow")
    assert reply["text"].startswith(":rocket: Started run <http://skyrun.test/runs/")
    assert reply["replace_original"] is False
    await terminate_runs(client, repo)


async def test_a_run_command_starts_one_run_even_when_slack_repeats_it(
    bot: httpx.AsyncClient, client: Client, slack: FakeSlack, repo: str
) -> None:
    response_url = slack.response_url("run")
    body = slash_command(
        f"{repo}@dev train SECRET_TOKEN=hunter2 LR=0.1",
        response_url=response_url,
        user="U0ALICE",
        channel="C0RUNS",
    )
    first = await deliver(bot, body)
    text = ack_text(first)
    assert text == texts.STARTING.format(
        what=f"{repo}@dev",
        stages=texts.STARTING_STAGES.format(stages="`train`"),
        envs=texts.STARTING_ENVS.format(names="`SECRET_TOKEN`, `LR`"),
    )
    assert "hunter2" not in text
    await slack.wait_for(lambda: slack.responses("run"), 20, "the start's reply")
    again = await deliver(bot, body, retry_num=1)
    assert again.status_code == 200
    await slack.wait_for(lambda: len(slack.responses("run")) == 2, 20, "the repeat's reply")

    runs = await RunControl(client, "").list_runs(repo=repo)
    assert len(runs) == 1
    run_id = runs[0].run_id
    started, repeated = slack.responses("run")
    assert started["text"] == texts.STARTED.format(
        url=f"http://skyrun.test/runs/{run_id}", run_id=run_id, what=f"{repo}@dev"
    )
    assert repeated["text"] == texts.ALREADY.format(
        url=f"http://skyrun.test/runs/{run_id}", run_id=run_id
    )
    request = await started_request(client, run_id)
    assert request.trigger is Trigger.SLACK
    assert request.repo == repo
    assert request.clone_url == f"https://github.com/{repo}.git"
    assert request.ref == "dev"
    assert request.stages == ["train"]
    assert request.envs == {"SECRET_TOKEN": "hunter2", "LR": "0.1"}
    assert request.requested_by == "U0ALICE"
    assert request.lane == lane_for_branch(repo, "dev")
    trigger_id = parse_qs(body)["trigger_id"][0]
    assert request.delivery_id == f"slack:{trigger_id}"  # what Slack repeats on a retry
    assert request.slack == SlackTarget("C0RUNS", "U0ALICE", response_url)
    assert all(call.method == "response_url" for call in slack.calls)


async def test_the_bot_answers_while_the_slack_web_api_is_down(
    client: Client, slack_settings: Callable[..., Settings], slack: FakeSlack, repo: str
) -> None:
    settings = slack_settings(SLACK_API_URL="http://127.0.0.1:9/api/")
    slack.down = True
    async with serving(create_app(settings, client)) as http:
        helped = ack_text(await deliver(http, slash_command("help", response_url="x")))
        assert helped == usage(Host.SLASH)
        started = await deliver(http, slash_command(repo, response_url=slack.response_url()))
        assert ack_text(started).startswith(":hourglass_flowing_sand: Starting")

        async def started_runs() -> None:
            while not await RunControl(client, "").list_runs(repo=repo):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(started_runs(), 20)
    await terminate_runs(client, repo)


# Cancel by command and by button, and who may.


async def _queued_run(client: Client, settings: Settings, repo: str, user: str) -> str:
    request = RunRequest(
        repo=repo,
        clone_url=f"https://github.com/{repo}.git",
        ref="main",
        trigger=Trigger.SLACK,
        requested_by=user,
        lane=lane_for_branch(repo, "main"),
        delivery_id=f"slack:{uuid.uuid4().hex}",
        slack=SlackTarget("C0RUNS", user, ""),
    )
    outcome = await RunControl(client, settings.temporal_task_queue).start(request)
    return outcome.run_id


async def _cancel_requested(client: Client, run_id: str) -> bool:
    history = await client.get_workflow_handle(run_id).fetch_history()
    wanted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    return any(event.event_type is wanted for event in history.events)


async def test_cancel_command_for_the_starter_and_allowed_users_only(
    client: Client, slack_settings: Callable[..., Settings], slack: FakeSlack, repo: str
) -> None:
    settings = slack_settings(SKYRUN_SLACK_ALLOWED_USERS="U0ADMIN")
    run_id = await _queued_run(client, settings, repo, "U0ALICE")
    url = f"http://skyrun.test/runs/{run_id}"
    async with serving(create_app(settings, client)) as http:

        async def cancel(user: str, target: str = run_id) -> str:
            key = uuid.uuid4().hex
            body = slash_command(
                f"cancel {target}", user=user, response_url=slack.response_url(key)
            )
            assert ack_text(await deliver(http, body)) == texts.CANCELLING.format(run_id=target)
            await slack.wait_for(lambda: slack.responses(key), 20, "the cancel reply")
            return str(slack.responses(key)[0]["text"])

        assert await cancel("U0MALLORY") == texts.DENIED_CANCEL.format(
            run_id=run_id, starter="<@U0ALICE>"
        )
        assert not await _cancel_requested(client, run_id)
        assert await cancel("U0ALICE", "nope-123") == texts.UNKNOWN_RUN.format(
            run_id="nope-123", command="/skyrun"
        )
        assert await cancel("U0ALICE") == texts.CANCELLED.format(
            user="U0ALICE", url=url, run_id=run_id
        )
        assert await _cancel_requested(client, run_id)
    await terminate_runs(client, repo)


async def test_cancel_button_checks_who_clicked(
    client: Client, slack_settings: Callable[..., Settings], slack: FakeSlack, repo: str
) -> None:
    settings = slack_settings(SKYRUN_SLACK_ALLOWED_USERS="U0ADMIN")
    run_id = await _queued_run(client, settings, repo, "U0ALICE")
    message = Message(channel="C0RUNS", ts="1700000001.000001", text="run", blocks=[])
    button = cancel_button(run_id)
    async with serving(create_app(settings, client)) as http:
        denied = await deliver(
            http,
            block_action(
                button, response_url=slack.response_url("mallory"), message=message, user="U0X"
            ),
        )
        assert denied.status_code == 200 and denied.text == ""
        await slack.wait_for(lambda: slack.responses("mallory"), 20, "the denial")
        [denial] = slack.responses("mallory")
        assert denial["response_type"] == "ephemeral"
        assert denial["text"].startswith(":no_entry: Only whoever started run")
        assert not await _cancel_requested(client, run_id)

        allowed = await deliver(
            http,
            block_action(
                button, response_url=slack.response_url("admin"), message=message, user="U0ADMIN"
            ),
        )
        assert allowed.status_code == 200
        await slack.wait_for(lambda: slack.responses("admin"), 20, "the confirmation")
    [done] = slack.responses("admin")
    assert done["response_type"] == "in_channel"
    assert done["thread_ts"] == message.ts
    assert done["text"].startswith(":octagonal_sign: <@U0ADMIN> cancelled run")
    assert await _cancel_requested(client, run_id)
    await terminate_runs(client, repo)


async def test_link_buttons_are_acknowledged_and_do_nothing(
    bot: httpx.AsyncClient, slack: FakeSlack
) -> None:
    link = {"action_id": "skyrun_link_run", "url": "http://skyrun.test/runs/x"}
    response = await deliver(bot, block_action(link, response_url=slack.response_url()))
    assert response.status_code == 200
    await asyncio.sleep(0.2)
    assert slack.calls == []


async def test_status_of_unknown_and_latest_runs(bot: httpx.AsyncClient, slack: FakeSlack) -> None:
    body = slash_command("status nope-123", response_url=slack.response_url("unknown"))
    assert ack_text(await deliver(bot, body)) == texts.LOOKING_UP.format(what="run `nope-123`")
    await slack.wait_for(lambda: slack.responses("unknown"), 20, "the status reply")
    assert slack.responses("unknown")[0]["text"] == texts.UNKNOWN_RUN.format(
        run_id="nope-123", command="/skyrun"
    )
    body = slash_command("status", response_url=slack.response_url("latest"))
    assert ack_text(await deliver(bot, body)) == texts.LOOKING_UP.format(what=texts.LATEST_RUNS)
    await slack.wait_for(lambda: slack.responses("latest"), 20, "the status reply")
    assert slack.responses("latest")[0]["text"] == texts.NO_RUNS.format(command="/skyrun")


# Hostile but signed bodies: a 4xx naming the problem, never a 500 or a run.


async def post_signed(
    http: httpx.AsyncClient, body: bytes, content_type: str | None = None
) -> httpx.Response:
    headers = signed_headers(body)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await http.post("/slack/events", content=body, headers=headers)


def interactive(payload: object) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def click(**changes: object) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        parse_qs(block_action(cancel_button("nope-123"), response_url="http://x/r"))["payload"][0]
    )
    payload.update(changes)
    return payload


HOSTILE: list[tuple[str, bytes, str | None, int, str]] = [
    ("non-JSON payload", b"payload=not-json", None, 400, E_NOT_JSON),
    ("payload that is a list", interactive([1, 2]), None, 400, E_NOT_JSON),
    ("deeply nested payload", b"payload=" + b"[" * 100_000, None, 400, E_TOO_DEEP),
    ("nested JSON body", b"{" + b'"a":{' * 50_000, "application/json", 400, E_TOO_DEEP),
    ("invalid UTF-8", b"command=%2Fskyrun&text=\xff\xfe", None, 400, E_ENCODING),
    ("actions not a list", interactive(click(actions="x")), None, 400, "actions"),
    ("an action not an object", interactive(click(actions=[5])), None, 400, "actions.0"),
    ("no actions", interactive(click(actions=[])), None, 400, "actions"),
    ("user a number", interactive(click(user=5)), None, 400, "user"),
    ("user id an object", interactive(click(user={"id": {"a": [1]}})), None, 400, "user.id"),
    ("team a number", interactive(click(team=5)), None, 400, "team"),
    ("container a string", interactive(click(container="x")), None, 400, "container"),
    ("channel a list", interactive(click(channel=[1])), None, 400, "channel"),
    ("event in a click", interactive(click(event="x")), None, 400, "event"),
    ("authorizations mistyped", interactive(click(authorizations=[1])), None, 400, "author"),
    ("lone surrogate", interactive(click(user={"id": "\ud800"})), None, 400, "user.id"),
    ("command a number", b'{"command": 5}', "application/json", 400, "command"),
    ("event a string", b'{"type": "event_callback", "event": "x"}', None, 400, "event"),
    ("event without type", b'{"type": "event_callback", "event": {}}', None, 400, "event.type"),
    ("an event", b'{"type": "event_callback", "event": {"type": "x"}}', None, 404, NOT_HANDLED),
    ("a shortcut", interactive({"type": "shortcut", "user": 5}), None, 404, NOT_HANDLED),
    ("a JSON list", b"[1]", "application/json", 400, E_NOT_JSON),
    (
        "a mention as user id",
        b"command=%2Fskyrun&text=help&user_id=U1%3E%3C%21channel",
        None,
        400,
        "user_id",
    ),
    (
        "NUL in trigger id",
        b"command=%2Fskyrun&text=help&trigger_id=1.2%00x",
        None,
        400,
        "trigger_id",
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
async def test_hostile_signed_bodies_get_a_4xx_and_unsigned_ones_401(
    bot: httpx.AsyncClient,
    slack: FakeSlack,
    body: bytes,
    content_type: str | None,
    status: int,
    reason: str,
) -> None:
    response = await post_signed(bot, body, content_type)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    unsigned = await bot.post(
        "/slack/events",
        content=body,
        headers={"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00"},
    )
    assert unsigned.status_code == 401
    assert (await bot.get("/healthz")).status_code == 200
    await asyncio.sleep(0.05)
    assert slack.calls == []


async def test_a_timestamp_that_is_not_a_number_is_unsigned(bot: httpx.AsyncClient) -> None:
    body = b"command=%2Fskyrun&text=help"
    headers = {**signed_headers(body), "X-Slack-Request-Timestamp": "soon"}
    response = await bot.post("/slack/events", content=body, headers=headers)
    assert response.status_code == 401


async def test_an_oversized_chunked_body_is_refused(bot: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * MAX_BODY_BYTES

    response = await bot.post(
        "/slack/events", content=chunks(), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        (f"acme/w A={'x' * MAX_COMMAND_CHARS}", f"{MAX_COMMAND_CHARS:,}"),
        (f"acme/w A={'x' * (MAX_ENV_VALUE_CHARS + 1)}", f"{MAX_ENV_VALUE_CHARS:,}"),
        ("acme/w@main\x00evil", "control character"),
        ("acme/w@-rf", "starts with '-'"),
    ],
)
async def test_command_text_is_bounded_and_refs_checked(
    bot: httpx.AsyncClient, client: Client, slack: FakeSlack, text: str, limit: str
) -> None:
    began = time.monotonic()
    reply = ack_text(await deliver(bot, slash_command(text, response_url=slack.response_url())))
    assert time.monotonic() - began < ACK_BUDGET_S
    assert reply.startswith(":warning:") and limit in reply
    assert "x" * 50 not in reply
    await asyncio.sleep(0.2)
    assert await RunControl(client, "").list_runs(repo="acme/w") == []


# Fuzzed shapes of slash commands and button clicks: only 2xx/4xx, the bot healthy after each.

FUZZ_COUNT = 60
CLICK_READS = dotted(
    "type",
    "user",
    "user.id",
    "actions",
    "actions.0",
    "actions.0.action_id",
    "actions.0.value",
    "container",
    "container.message_ts",
    "container.is_ephemeral",
    "team",
    "team.id",
    "channel",
    "channel.id",
    "response_url",
)


def form_mutations(form: dict[str, str], seed: int, count: int) -> Iterator[bytes]:
    """Slash-command forms with fields dropped, repeated, or set to hostile text or bytes."""
    rng = random.Random(seed)
    words = ["", "x" * 10_000, "\x00", "%", "%ZZ", "-rf", "@{", "'", '"', "=", "&", "\u202e"]
    for _ in range(count):
        fields = list(form.items())
        for _ in range(rng.randint(1, 3)):
            index = rng.randrange(len(fields))
            name, value = fields[index]
            choice = rng.random()
            if choice < 0.2:
                del fields[index]
            elif choice < 0.3:
                fields.append((name, rng.choice(words)))
            else:
                fields[index] = (name, value + rng.choice(words) * rng.randint(1, 3))
        body = urlencode(fields).encode()
        if rng.random() < 0.2:  # raw bytes as no form encoder would write them
            cut = rng.randrange(len(body))
            body = body[:cut] + rng.choice([b"\xff", b"%", b"\x00", b"&&", b"=="]) + body[cut:]
        yield body


@pytest.mark.timeout(60)
async def test_fuzzed_commands_and_clicks_only_get_2xx_or_4xx(
    bot: httpx.AsyncClient, client: Client, slack: FakeSlack, repo: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    began = time.monotonic()
    form = dict(parse_qsl(slash_command(f"{repo}@main train A=1", response_url="http://x/r")))
    form["response_url"] = slack.response_url("fuzz")
    statuses: dict[int, int] = {}
    starts = 0
    bodies: list[tuple[bytes, str | None]] = [
        (body, None) for body in form_mutations(form, 1, FUZZ_COUNT)
    ]
    bodies += [
        (interactive(payload), None)
        for payload in mutations(
            click(response_url=slack.response_url("fuzz")), 2, FUZZ_COUNT, str(marker), CLICK_READS
        )
    ]
    event = {"type": "event_callback", "team_id": "T1", "event": {"type": "app_mention"}}
    bodies += [
        (json.dumps(payload).encode(), "application/json")
        for payload in mutations(event, 3, FUZZ_COUNT // 3, str(marker))
    ]
    for body, content_type in bodies:
        response = await post_signed(bot, body, content_type)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (body[:300], response.text)
        if response.status_code == 200 and response.content:
            starts += response.json().get("text", "").startswith(":hourglass")
        assert (await bot.get("/healthz")).status_code == 200
    assert statuses.get(400, 0) > FUZZ_COUNT // 2
    await asyncio.sleep(0.5)
    runs = await RunControl(client, "").list_runs(repo=repo)
    assert len(runs) <= starts
    for run in runs:  # what did start carries only values the door accepts
        request = await started_request(client, run.run_id)
        assert request.clone_url == f"https://github.com/{repo}.git"
        assert request.ref == "main"
        for name, value in request.envs.items():
            check_env(name, value)
    assert not marker.exists()
    assert time.monotonic() - began < 20


@pytest.mark.parametrize("value", ["nul\x00run", "../etc", "", "x" * 300])
async def test_a_cancel_button_with_no_run_id_says_so(
    bot: httpx.AsyncClient, slack: FakeSlack, value: str
) -> None:
    button = {**cancel_button("placeholder"), "value": value}
    key = uuid.uuid4().hex
    response = await deliver(bot, block_action(button, response_url=slack.response_url(key)))
    assert response.status_code == 200
    await slack.wait_for(lambda: slack.responses(key), 20, "the reply")
    [reply] = slack.responses(key)
    error = E_BAD_RUN_ID.format(word=quoted(value))
    assert reply["text"] == texts.BAD_BUTTON.format(error=error[:1].upper() + error[1:])
    assert len(reply["text"]) < 150


# Sweeps (`/skyrun sweep OWNER/REPO ... KEY=a,b`): refused at the door before anything starts.


async def test_a_sweep_over_the_cap_or_by_a_stranger_is_refused_at_once(
    client: Client, slack_settings: Callable[..., Settings], slack: FakeSlack, repo: str
) -> None:
    settings = slack_settings(SKYRUN_SLACK_ALLOWED_USERS="U0ADMIN", SKYRUN_MAX_SWEEP="3")
    async with serving(create_app(settings, client)) as http:
        large = await deliver(
            http,
            slash_command(
                f"sweep {repo} A=1,2 B=3,4", user="U0ADMIN", response_url=slack.response_url()
            ),
        )
        stranger = await deliver(
            http,
            slash_command(
                f"sweep {repo} A=1,2", user="U0MALLORY", response_url=slack.response_url()
            ),
        )
        empty = await deliver(
            http,
            slash_command(f"sweep {repo} A=1,", user="U0ADMIN", response_url=slack.response_url()),
        )
    assert ack_text(large) == texts.SWEEP_TOO_LARGE.format(
        error="This sweep would start 4 runs; SKYRUN_MAX_SWEEP is 3"
    )
    assert ack_text(stranger) == texts.DENIED_USER.format(user="U0MALLORY")
    assert ack_text(empty).startswith(":warning: A lists an empty value")
    await asyncio.sleep(0.3)
    assert slack.calls == []


# Budgets (issue 14): `/skyrun approve RUN` for SKYRUN_SLACK_APPROVERS only.


async def test_approve_command_for_slack_approvers_only(
    client: Client,
    slack_settings: Callable[..., Settings],
    slack: FakeSlack,
    git_repo: Callable[..., Path],
) -> None:
    from tests.runs import request_for, wait_finished
    from worker.contract import RunState
    from worker.links import Links
    from worker.process import build_workers, running_workers
    from worker.runcontrol import RunControl
    from worker.slack.blocks import ACTION_APPROVE, buttons

    files = {
        ".skyrun.yaml": "stages:\n  - {name: a, task: a.yaml}\n",
        "a.yaml": "run: echo hi\n",
    }
    # 1 CPU at $1/h for the worst case of 180 min: $3 estimated, above SKYRUN_APPROVAL_USD.
    priced = slack_settings(
        SKYRUN_SLACK_APPROVERS="U0BOSS", SKYRUN_APPROVAL_USD="0.01", SKYRUN_CPU_HOUR_USD="1"
    )
    async with (
        running_workers(build_workers(client, priced)),
        serving(create_app(priced, client)) as http,
    ):
        control = RunControl(client, priced.temporal_task_queue)
        outcome = await control.start(request_for(git_repo(files)))

        async def awaiting() -> None:
            while True:
                progress = await control.progress(outcome.run_id)
                if progress and progress.state is RunState.AWAITING_APPROVAL:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(awaiting(), 60)

        async def approve(user: str) -> str:
            body = slash_command(
                f"approve {outcome.run_id}", user=user, response_url=slack.response_url(user)
            )
            return ack_text(await deliver(http, body))

        assert await approve("U0MALLORY") == texts.APPROVE_DENIED.format(user="U0MALLORY")
        # The Approve button the waiting run's message carries says the same to a non-approver.
        waiting_progress = await control.progress(outcome.run_id)
        assert waiting_progress is not None
        button = next(
            element
            for element in buttons(waiting_progress, Links(priced))
            if element["action_id"] == ACTION_APPROVE
        )
        clicked = await deliver(
            http, block_action(button, response_url=slack.response_url("click"), user="U0X")
        )
        assert clicked.status_code == 200
        await slack.wait_for(lambda: slack.responses("click"), 20, "the button's denial")
        assert slack.responses("click")[0]["text"] == texts.APPROVE_DENIED.format(user="U0X")
        assert (await control.progress(outcome.run_id)).state is RunState.AWAITING_APPROVAL  # type: ignore[union-attr]
        assert await approve("U0BOSS") == texts.APPROVED.format(
            user="U0BOSS", url=f"http://skyrun.test/runs/{outcome.run_id}", run_id=outcome.run_id
        )
        done = await wait_finished(control, outcome.run_id)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.approval is not None and done.approval.approved_by == "U0BOSS"
