"""`POST /github/webhook`: verify the signature, parse, hand to the worker; never call GitHub here.

Every delivery that asks for work becomes one workflow keyed by its delivery id (a run to start or
a lane to cancel, from a push, a pull request or a merge queue group, goes through the RunControl
in the worker; a comment command, a check run's button and GitHub's Re-run are authorized and
answered there). So the request path makes one Temporal call, a redelivery is refused by Temporal
at once, and GitHub gets its answer in milliseconds.

What a hostile (but signed) body gets, never a 500, a hang or a run:

- 401: no secret configured, no signature, a bad signature (before the body is even parsed);
- 413: a body past GitHub's 25 MB;
- 400: a body that is not a JSON object (invalid UTF-8, nested too deep, not an object), or an
  `X-GitHub-Delivery` header that is not a delivery id;
- 422: JSON of the wrong shape for its event: a field skyrun reads is missing, of the wrong type
  or holds a value GitHub never sends (a SHA that is not 40 hex, a ref git would refuse, a comment
  past 65,536 characters, a lone surrogate); the reason names the fields;
- 200 "ignored" with the reason: a well-formed delivery that asks for nothing (a tag push, a
  comment that is not a command, an event skyrun does not handle).

GitHub does not redeliver failed deliveries by itself, so refusing is never retried pointlessly.
Answers are ASCII-only JSON, so any reason can be encoded. Large bodies are parsed off the event
loop, and `/skyrun` text is bounded before it is parsed (worker/commands.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from bot.bodies import read_capped
from bot.github.events import Action, Ignore, PayloadError, StartCommand, StartRun, route
from bot.github.signature import HEADER, SHA1_HEADER, signature_matches
from bot.metrics import Outcome, record_webhook
from bot.state import BotState
from worker.github.contract import (
    COMMAND_WORKFLOW,
    DELIVERY_WORKFLOW,
    GitHubCommand,
    RunDelivery,
    delivery_workflow_id,
)
from worker.links import GitHubHost
from worker.settings import Settings

log = logging.getLogger(__name__)

PATH = "/github/webhook"
MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub caps payloads at 25 MB; anything larger is not from GitHub."""
PARSE_OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed and validated in a thread, so /healthz keeps answering."""
DELIVERY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

E_NO_SECRET = (
    "GITHUB_WEBHOOK_SECRET is not set on this server, so it refuses every delivery; "
    "set it to the webhook's secret"
)
E_NO_SIGNATURE = f"missing {HEADER} header"
E_SHA1_ONLY = f"only {SHA1_HEADER} (SHA-1) was sent; skyrun requires {HEADER}"
E_BAD_SIGNATURE = f"{HEADER} does not match the body"
E_TOO_LARGE = "the body exceeds GitHub's 25 MB limit"
E_BAD_LENGTH = "invalid Content-Length"
E_NOT_JSON = "the body is not a JSON object"
E_TOO_DEEP = "the body is nested too deeply to be a GitHub payload"
E_DELIVERY = "the X-GitHub-Delivery header is not a delivery id"
E_TEMPORAL = "Temporal is unavailable; nothing was started (GitHub may redeliver)"
R_PONG = "pong"
R_DUPLICATE = "this delivery was already handled"


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate in a reason still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: Outcome
    reason: str = ""
    extra: dict[str, Any] | None = None

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"outcome": self.outcome.value}
        if self.reason:
            body["reason"] = self.reason
        body.update(self.extra or {})
        return AsciiJSONResponse(body, status_code=self.status)


def _rejected(status: int, reason: str) -> Answer:
    return Answer(status, Outcome.REJECTED, reason)


async def _read_verified(request: Request, settings: Settings) -> bytes | Answer:
    """The raw body once it is proven to come from GitHub, or the refusal."""
    if settings.github_webhook_secret is None:
        return _rejected(401, E_NO_SECRET)
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            return _rejected(400, E_BAD_LENGTH)
        if int(length) > MAX_BODY_BYTES:
            return _rejected(413, E_TOO_LARGE)
    body = await read_capped(request, MAX_BODY_BYTES)
    if body is None:
        return _rejected(413, E_TOO_LARGE)
    signature = request.headers.get(HEADER)
    if not signature:
        return _rejected(401, E_SHA1_ONLY if request.headers.get(SHA1_HEADER) else E_NO_SIGNATURE)
    if not signature_matches(settings.github_webhook_secret.get_secret_value(), body, signature):
        return _rejected(401, E_BAD_SIGNATURE)
    return body


async def github_webhook(request: Request, github: GitHubHost) -> JSONResponse:
    event = request.headers.get("x-github-event", "")
    answer = await _handle(request, event, github)
    record_webhook(event, answer.outcome)
    if answer.outcome is Outcome.REJECTED:
        log.warning("github webhook rejected (%s): %s", answer.status, ascii(answer.reason))
    else:
        what = ascii(event[:64])
        log.info("github webhook %s: %s %s", what, answer.outcome.value, ascii(answer.reason))
    return answer.response()


def _decode(body: bytes) -> dict[str, Any] | str:
    """The payload as a dict, or why it is not one (a deep nesting raises RecursionError)."""
    try:
        payload = json.loads(body)
    except RecursionError:
        return E_TOO_DEEP
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return E_NOT_JSON
    return payload if isinstance(payload, dict) else E_NOT_JSON


def _parse(
    body: bytes, event: str, delivery: str, settings: Settings, github: GitHubHost
) -> Action | Answer:
    """Decode and route the body: CPU-bound, so a large one runs in a thread."""
    payload = _decode(body)
    if isinstance(payload, str):
        return _rejected(400, payload)
    if event == "ping":
        return Answer(200, Outcome.REPLIED, R_PONG)
    try:
        return route(event, delivery, payload, settings.allowed_repos, github)
    except PayloadError as err:
        return _rejected(422, str(err))
    except RecursionError:
        return _rejected(400, E_TOO_DEEP)


async def _handle(request: Request, event: str, github: GitHubHost) -> Answer:
    state: BotState = request.app.state.bot
    body = await _read_verified(request, state.settings)
    if isinstance(body, Answer):
        return body
    header = request.headers.get("x-github-delivery")
    if header and not DELIVERY_RE.fullmatch(header):
        return _rejected(400, E_DELIVERY)
    # A redelivery repeats the body byte for byte, so its hash stands in for a missing id.
    delivery = header or ("body-" + hashlib.sha256(body).hexdigest()[:32])
    if len(body) > PARSE_OFF_LOOP_BYTES:
        parsed = await asyncio.to_thread(_parse, body, event, delivery, state.settings, github)
    else:
        parsed = _parse(body, event, delivery, state.settings, github)
    if isinstance(parsed, Answer):
        return parsed
    try:
        return await _act(state, delivery, parsed)
    except RPCError as err:
        log.error("github webhook: Temporal unavailable: %s", err)
        return Answer(503, Outcome.ERROR, E_TEMPORAL)


async def _act(state: BotState, delivery: str, action: Action) -> Answer:
    """Hand the work to the worker: one keyed workflow start is all the request path does."""
    if isinstance(action, Ignore):
        return Answer(200, Outcome.IGNORED, action.reason)
    argument: GitHubCommand | RunDelivery
    # The lane's newest request wins by this time, whatever order the worker gets to them in.
    received_at = time.time_ns()
    if isinstance(action, StartCommand):
        action.command.received_at = received_at
        workflow, argument = COMMAND_WORKFLOW, action.command
        extra = {"command": action.command.action.value}
    elif isinstance(action, StartRun):
        action.request.requested_at = received_at
        workflow, argument = DELIVERY_WORKFLOW, RunDelivery(delivery, request=action.request)
        extra = {"run": action.request.lane}
    else:
        workflow = DELIVERY_WORKFLOW
        argument = RunDelivery(
            delivery, cancel_lane=action.lane, reason=action.reason, requested_at=received_at
        )
        extra = {"cancel": action.lane, "reason": action.reason}
    workflow_id = delivery_workflow_id(delivery)
    try:
        await state.client.start_workflow(
            workflow,
            argument,
            id=workflow_id,
            task_queue=state.settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        return Answer(200, Outcome.DUPLICATE, R_DUPLICATE, {"workflow_id": workflow_id})
    return Answer(202, Outcome.ACCEPTED, "", {**extra, "workflow_id": workflow_id})


def routes(settings: Settings) -> list[BaseRoute]:
    github = GitHubHost.of(settings)  # a bad GITHUB_API_URL stops the bot at startup, loudly

    async def endpoint(request: Request) -> JSONResponse:
        return await github_webhook(request, github)

    return [Route(PATH, endpoint, methods=["POST"])]
