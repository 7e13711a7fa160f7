"""A fake Slack: the Web API methods skyrun uses and `response_url`s, on a real local HTTP server.

Real `slack_sdk` / Bolt clients point at it (`api_url` ends with "/", as `base_url` must). It
records every call, keeps the messages it was asked to post so tests can read them as a user
would, and can be told to fail: everything down, one method failing, a channel the bot is not in.
The module also builds requests *from* Slack (slash commands, button clicks), signed as Slack
signs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from aiohttp import web

BOT_TOKEN = "xoxb-skyrun-test"
SIGNING_SECRET = "skyrun-test-signing-secret"
TEAM_ID = "T0SKYRUN"
BOT_USER_ID = "U0SKYBOT"
BOT_NAME = "skyrun"
TEAM_NAME = "skyrun-test"
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_ACTION_ELEMENTS = 25


@dataclass
class SlackCall:
    method: str
    """The Web API method ("chat.update"), or "response_url" for a POST to a response URL."""
    args: dict[str, Any]
    token: str = ""
    key: str = ""
    """For response_url calls: which response URL (see `FakeSlack.response_url`)."""


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str = ""
    edits: int = 0


class FakeSlack:
    """Run with `async with FakeSlack() as slack:`; `slack.api_url` is the Web API base URL."""

    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self.calls: list[SlackCall] = []
        self.messages: dict[str, Message] = {}
        self.down = False
        """Answer every request with 503, as during an outage."""
        self.not_in_channel: set[str] = set()
        """Channel ids or names the bot was not invited to."""
        self.failures: dict[str, list[tuple[str, Callable[[dict[str, Any]], bool] | None]]] = {}
        """Method → Slack errors to answer its next (matching) calls with, one per call."""
        self._channels: dict[str, str] = {}
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, key: str | None = None) -> str:
        return f"{self.base}/response/{key or uuid.uuid4().hex[:12]}"

    def channel_id(self, channel: str) -> str:
        """The id of a channel given by id or `#name` (names get stable fake ids)."""
        if not channel.startswith("#"):
            return channel
        digest = hashlib.sha256(channel.encode()).hexdigest()[:9].upper()
        return self._channels.setdefault(channel, f"C{digest}")

    def fail(
        self,
        method: str,
        *errors: str,
        matching: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next calls of `method` (those whose arguments match) with these errors."""
        self.failures.setdefault(method, []).extend((error, matching) for error in errors)

    # What tests read.

    def calls_to(self, method: str) -> list[SlackCall]:
        return [call for call in self.calls if call.method == method]

    def responses(self, key: str | None = None) -> list[dict[str, Any]]:
        """Bodies POSTed to response URLs (to one of them, given its key)."""
        return [
            call.args for call in self.calls_to("response_url") if key is None or call.key == key
        ]

    def thread(self, ts: str) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts == ts]

    def top_level(self, channel: str | None = None) -> list[Message]:
        return [
            m
            for m in self.messages.values()
            if not m.thread_ts and (channel is None or m.channel == self.channel_id(channel))
        ]

    async def wait_for(
        self, predicate: Callable[[], object], timeout: float = 60, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"fake Slack: timed out waiting for {what}; calls: {self}")
            await asyncio.sleep(0.05)

    def __repr__(self) -> str:
        return f"FakeSlack({[call.method for call in self.calls]})"

    # The server.

    async def _args(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if request.content_type == "application/json":
            args: dict[str, Any] = json.loads(raw or b"{}")
        else:
            args = dict(parse_qsl(raw.decode()))
            args.update(request.query)
        if isinstance(args.get("blocks"), str):
            args["blocks"] = json.loads(args["blocks"])
        return args

    async def _response_url(self, request: web.Request) -> web.StreamResponse:
        args = await self._args(request)
        if self.down:
            return web.Response(status=503, text="service unavailable")
        self.calls.append(SlackCall("response_url", args, key=request.match_info["key"]))
        return web.Response(text="ok", content_type="text/plain")

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await self._args(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = token or str(args.get("token", ""))
        self.calls.append(SlackCall(method, args, token=token))
        if self.down:
            return web.Response(status=503, text="service unavailable")
        if token != self.token:
            return self._error("invalid_auth" if token else "not_authed")
        for index, (error, matching) in enumerate(self.failures.get(method, [])):
            if matching is None or matching(args):
                del self.failures[method][index]
                return self._error(error)
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
        }.get(method)
        if handler is None:
            return self._error("unknown_method")
        return handler(args)

    @staticmethod
    def _ok(**data: Any) -> web.Response:
        return web.json_response({"ok": True, **data})

    @staticmethod
    def _error(error: str) -> web.Response:
        return web.json_response({"ok": False, "error": error})

    def _next_ts(self) -> str:
        self._counter += 1
        return f"{1_700_000_000 + self._counter}.{self._counter:06d}"

    def _channel_error(self, channel: str) -> str | None:
        if not channel:
            return "channel_not_found"
        if channel in self.not_in_channel or self.channel_id(channel) in self.not_in_channel:
            return "not_in_channel"
        return None

    @staticmethod
    def _blocks_error(blocks: object) -> str | None:
        if blocks is None:
            return None
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            return "invalid_blocks"
        for block in blocks:
            text = block.get("text") if isinstance(block, dict) else None
            if isinstance(text, dict) and len(str(text.get("text", ""))) > MAX_SECTION_TEXT:
                return "invalid_blocks"
            elements = block.get("elements", []) if isinstance(block, dict) else []
            if len(elements) > MAX_ACTION_ELEMENTS:
                return "invalid_blocks"
        return None

    def _auth_test(self, args: dict[str, Any]) -> web.Response:
        return self._ok(
            url=f"https://{TEAM_NAME}.slack.com/",
            team=TEAM_NAME,
            user=BOT_NAME,
            team_id=TEAM_ID,
            user_id=BOT_USER_ID,
            bot_id="B0SKYBOT",
            is_enterprise_install=False,
        )

    def _post_message(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel", ""))
        error = self._channel_error(channel) or self._blocks_error(args.get("blocks"))
        if error:
            return self._error(error)
        thread_ts = str(args.get("thread_ts") or "")
        if thread_ts and thread_ts not in self.messages:
            return self._error("thread_not_found")
        message = Message(
            channel=self.channel_id(channel),
            ts=self._next_ts(),
            text=str(args.get("text", "")),
            blocks=list(args.get("blocks") or []),
            thread_ts=thread_ts,
        )
        self.messages[message.ts] = message
        return self._ok(
            channel=message.channel,
            ts=message.ts,
            message={"text": message.text, "blocks": message.blocks, "ts": message.ts},
        )

    def _update(self, args: dict[str, Any]) -> web.Response:
        ts = str(args.get("ts", ""))
        message = self.messages.get(ts)
        # chat.update takes the channel id, never a #name.
        if message is None or message.channel != args.get("channel"):
            return self._error("message_not_found")
        error = self._blocks_error(args.get("blocks"))
        if error:
            return self._error(error)
        message.text = str(args.get("text", message.text))
        if "blocks" in args:
            message.blocks = list(args["blocks"] or [])
        message.edits += 1
        return self._ok(channel=message.channel, ts=ts, text=message.text)

    def _post_ephemeral(self, args: dict[str, Any]) -> web.Response:
        error = self._channel_error(str(args.get("channel", "")))
        if error:
            return self._error(error)
        return self._ok(message_ts=self._next_ts())


# Requests from Slack to the bot, signed as Slack signs them.


def signature(body: str | bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 signature: HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + timestamp.encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    body: str | bytes,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(body, stamp, secret),
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


def slash_command(
    text: str,
    *,
    response_url: str,
    user: str = "U0ALICE",
    user_name: str = "alice",
    channel: str = "C0RUNS",
    command: str = "/skyrun",
    trigger_id: str | None = None,
) -> str:
    """The form body of a slash command invocation."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "skyrun",
            "channel_id": channel,
            "channel_name": "runs",
            "user_id": user,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": "A0SKYRUN",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:20]}",
        }
    )


def block_action(
    action: dict[str, Any],
    *,
    response_url: str,
    message: Message | None = None,
    user: str = "U0ALICE",
    channel: str = "C0RUNS",
) -> str:
    """The form body of a click on a button (`action`: the button element from the message)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0SKYRUN",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message.ts if message else "1.000001",
            "channel_id": message.channel if message else channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:20]}",
        "team": {"id": TEAM_ID, "domain": "skyrun"},
        "channel": {"id": message.channel if message else channel, "name": "runs"},
        "message": {"ts": message.ts, "text": message.text, "blocks": message.blocks}
        if message
        else {},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action["action_id"],
                "block_id": action.get("block_id", "actions"),
                "text": action.get("text", {"type": "plain_text", "text": "button"}),
                "value": action.get("value", ""),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def buttons(message: Message) -> dict[str, dict[str, Any]]:
    """The buttons of a message by action_id."""
    found: dict[str, dict[str, Any]] = {}
    for block in message.blocks:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    found[element["action_id"]] = {**element, "block_id": block.get("block_id")}
    return found


def message_text(message: Message) -> str:
    """Everything a reader sees in a message: its blocks' texts (or its fallback text)."""
    parts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                parts.append(node["text"])
            for key, value in node.items():
                if key != "text" or not isinstance(value, str):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return "\n".join(parts) if parts else message.text


async def deliver(
    http: httpx.AsyncClient,
    body: str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
    path: str = "/slack/events",
) -> httpx.Response:
    """POST a request to the bot as Slack would: signed with the app's signing secret."""
    headers = signed_headers(body, secret=secret, timestamp=timestamp, retry_num=retry_num)
    return await http.post(path, content=body, headers=headers)
