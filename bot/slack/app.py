"""The Bolt app behind `POST /slack/events`: acknowledge at once, then act through the RunControl.

Request verification (signature, 5-minute timestamp window) stays on. The bot's identity comes
from settings (`authorize`), so Bolt never calls `auth.test`: the front door answers even when
Slack's Web API is down. The only Slack call made here is Bolt's `respond` to the request's own
response URL, after the acknowledgement; the progress message is posted by the worker.

Before Bolt sees a request, the route checks its size (413), its signature (401, before anything
is parsed) and its shape (bot/slack/requests.py: 400 naming the problem, 404 for kinds skyrun does
not handle), so no body Slack could sign, or an attacker could send, gets a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from datetime import datetime
from typing import Any

from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bot.bodies import read_capped
from bot.metrics import Outcome, record_slack
from bot.slack import texts
from bot.slack.access import cancel_denial, start_denial
from bot.slack.commands import delivery_id, run_request
from bot.slack.requests import E_UNREADABLE, RequestError, checked
from bot.state import BotState
from worker.commands import (
    E_BAD_RUN_ID,
    PREFIX,
    RUN_ID_RE,
    Command,
    CommandError,
    CommandKind,
    Host,
    parse,
    quoted,
    usage,
)
from worker.contract import RunProgress, SlackTarget, Trigger
from worker.links import GitHubHost, Links
from worker.masking import Masker
from worker.retry import RetryRefused
from worker.runcontrol import RunSummary, StartOutcome, runs_query, summary_of
from worker.settings import Settings
from worker.slack.blocks import (
    ACTION_APPROVE,
    ACTION_CANCEL,
    ACTION_LINK_PREFIX,
    ACTION_RETRY,
    escape,
    fallback_text,
    run_blocks,
    slack_time,
)
from worker.slack.texts import RUN_ICONS, RUN_WORDS, TRIGGER_WORDS
from worker.sweepspec import SweepRequest, size, size_problem

log = logging.getLogger(__name__)

PATH = "/slack/events"
STATE_KEY = "skyrun"
"""Where the app's BotState sits in Bolt's request context."""
SLACK_OFF = (
    f"Slack is off on this server: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET to turn on {PATH}."
)
TOO_LARGE = "request body too large"
UNSIGNED = "invalid request"
SIGNATURE_WINDOW_S = 5 * 60
"""Slack's replay window, as Bolt's own check (which still runs) applies it."""
MAX_BODY_BYTES = 1024 * 1024
STATUS_TIMEOUT_S = 5.0
STATUS_LIMIT = 10


class SlackHandlers:
    """The listeners: each acknowledges first (Slack waits 3 s at most), then does the work."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.links = Links(settings)
        self.masker = Masker.from_settings(settings)
        self.github = GitHubHost.of(settings)

    # Slash commands.

    async def command(
        self,
        ack: AsyncAck,
        command: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        state: BotState = context[STATE_KEY]
        name = str(command.get("command") or PREFIX)
        help_text = usage(Host.SLASH, name)
        try:
            parsed = parse(str(command.get("text") or ""), Host.SLASH, command=name)
        except CommandError as err:
            record_slack("command", Outcome.REPLIED)
            await _ack(ack, texts.USAGE_ERROR.format(error=_sentence(str(err)), usage=help_text))
            return
        user = str(command.get("user_id") or "")
        if parsed.kind is CommandKind.HELP:
            record_slack("command", Outcome.REPLIED)
            await _ack(ack, help_text)
        elif parsed.kind is CommandKind.RUN:
            await self._start(state, parsed, command, ack, respond)
        elif parsed.kind is CommandKind.SWEEP:
            await self._start_sweep(state, parsed, command, ack, respond)
        elif parsed.kind is CommandKind.STATUS:
            what = f"run `{parsed.run_id}`" if parsed.run_id else texts.LATEST_RUNS
            await _ack(ack, texts.LOOKING_UP.format(what=what))
            record_slack("command", Outcome.REPLIED)
            status = await self._status(state, parsed.run_id, name)
            await _send(respond, **status)
        elif parsed.kind is CommandKind.APPROVE:
            await _ack(ack, await self._approve(state, user, parsed.run_id))
        elif parsed.kind is CommandKind.CANCEL:
            await _ack(ack, texts.CANCELLING.format(run_id=parsed.run_id))
            reply, _ = await self._cancel(state, user, parsed.run_id, name, "command")
            await _send(respond, text=reply)
        elif parsed.kind is CommandKind.RETRY:
            await _ack(ack, texts.RETRYING.format(run_id=parsed.run_id))
            target = SlackTarget(
                channel=str(command.get("channel_id") or ""),
                user=user,
                response_url=str(command.get("response_url") or ""),
            )
            reply, _ = await self._retry(state, target, parsed.run_id, name, "command")
            await _send(respond, text=reply)

    async def _start(
        self,
        state: BotState,
        parsed: Command,
        command: dict[str, Any],
        ack: AsyncAck,
        respond: AsyncRespond,
    ) -> None:
        user = str(command.get("user_id") or "")
        denial = start_denial(self.settings, user, parsed.repo)
        if denial:
            record_slack("command", Outcome.DENIED)
            await _ack(ack, denial)
            return
        request = run_request(
            parsed,
            github=self.github,
            user=user,
            channel=str(command.get("channel_id") or ""),
            response_url=str(command.get("response_url") or ""),
            delivery=delivery_id(
                str(command.get("trigger_id") or ""), repr(sorted(command.items()))
            ),
        )
        stages = (
            texts.STARTING_STAGES.format(stages=", ".join(f"`{s}`" for s in parsed.stages))
            if parsed.stages
            else ""
        )
        # Only the names: values may be secrets.
        envs = (
            texts.STARTING_ENVS.format(names=", ".join(f"`{k}`" for k in parsed.envs))
            if parsed.envs
            else ""
        )
        await _ack(ack, texts.STARTING.format(what=parsed.target, stages=stages, envs=envs))
        try:
            outcome = await state.control.start(request)
        except Exception as err:  # Temporal unreachable or refusing: say so, start nothing
            log.exception("Slack: could not start a run of %s", parsed.target)
            record_slack("command", Outcome.ERROR)
            error = escape(str(err) or type(err).__name__)
            await _send(respond, text=texts.START_FAILED.format(what=parsed.target, error=error))
            return
        record_slack("command", Outcome.STARTED if outcome.started else Outcome.DUPLICATE)
        await _send(respond, text=self._started(outcome, parsed))

    async def _start_sweep(
        self,
        state: BotState,
        parsed: Command,
        command: dict[str, Any],
        ack: AsyncAck,
        respond: AsyncRespond,
    ) -> None:
        """A sweep: one run per combination, one message with their table (posted by it)."""
        user = str(command.get("user_id") or "")
        denial = start_denial(self.settings, user, parsed.repo)
        if denial:
            record_slack("command", Outcome.DENIED)
            await _ack(ack, denial)
            return
        problem = size_problem(parsed.sweep, self.settings.max_sweep)
        if problem:
            record_slack("command", Outcome.REPLIED)
            await _ack(ack, texts.SWEEP_TOO_LARGE.format(error=_sentence(problem)))
            return
        base = run_request(
            parsed,
            github=self.github,
            user=user,
            channel=str(command.get("channel_id") or ""),
            response_url=str(command.get("response_url") or ""),
            delivery=delivery_id(
                str(command.get("trigger_id") or ""), repr(sorted(command.items()))
            ),
        )
        request = SweepRequest(base, list(parsed.sweep))
        count = size(parsed.sweep)
        keys = ", ".join(f"`{axis.key}`" for axis in parsed.sweep)
        await _ack(ack, texts.STARTING_SWEEP.format(what=parsed.target, keys=keys, count=count))
        try:
            outcome = await state.control.start_sweep(request, self.settings.max_sweep)
        except Exception as err:  # Temporal unreachable or refusing: say so, start nothing
            log.exception("Slack: could not start a sweep of %s", parsed.target)
            record_slack("command", Outcome.ERROR)
            error = escape(str(err) or type(err).__name__)
            await _send(respond, text=texts.START_FAILED.format(what=parsed.target, error=error))
            return
        record_slack("command", Outcome.STARTED if outcome.started else Outcome.DUPLICATE)
        if outcome.started:
            text = texts.STARTED_SWEEP.format(
                sweep_id=outcome.run_id, what=parsed.target, count=count
            )
        else:
            text = texts.ALREADY_SWEEP.format(sweep_id=outcome.run_id)
        await _send(respond, text=text)

    def _started(self, outcome: StartOutcome, parsed: Command) -> str:
        url = self.links.run(outcome.run_id)
        if not outcome.started:
            return texts.ALREADY.format(url=url, run_id=outcome.run_id)
        text = texts.STARTED.format(url=url, run_id=outcome.run_id, what=parsed.target)
        if outcome.superseded:
            runs = ", ".join(f"`{run_id}`" for run_id in outcome.superseded)
            verb = "is" if len(outcome.superseded) == 1 else "are"
            text += texts.SUPERSEDED.format(runs=runs, verb=verb)
        return text

    # Status.

    async def _status(self, state: BotState, run_id: str, command: str) -> dict[str, Any]:
        try:
            if run_id:
                return await self._run_status(state, run_id, command)
            return await self._latest(state, command)
        except Exception as err:  # Temporal unreachable: say so rather than go quiet
            log.warning("Slack: status lookup failed: %s", err)
            error = escape(str(err) or type(err).__name__)
            return {"text": texts.STATUS_FAILED.format(error=error, url=f"{self.links.base}/runs")}

    async def _run_status(self, state: BotState, run_id: str, command: str) -> dict[str, Any]:
        progress: RunProgress | None = None
        reason = ""
        try:
            progress = await asyncio.wait_for(state.control.progress(run_id), STATUS_TIMEOUT_S)
        except TimeoutError:
            reason = f"no answer within {STATUS_TIMEOUT_S:.0f} s"
        if progress is not None:
            blocks = run_blocks(
                progress, self.links, run_pages=self.settings.run_pages, masker=self.masker
            )
            return {"text": fallback_text(progress), "blocks": blocks}
        summary = await state.control.summary(run_id)
        if summary is None:
            return {"text": texts.UNKNOWN_RUN.format(run_id=run_id, command=command)}
        text = self._line(summary)
        if reason:
            text += "\n" + texts.STATUS_PARTIAL.format(reason=reason)
        return {"text": text}

    async def _latest(self, state: BotState, command: str) -> dict[str, Any]:
        query = runs_query(task_queue=self.settings.temporal_task_queue)
        summaries = [
            summary_of(execution)
            async for execution in state.client.list_workflows(query, limit=STATUS_LIMIT)
        ]
        if not summaries:
            return {"text": texts.NO_RUNS.format(command=command)}
        lines = [texts.STATUS_TITLE, *(self._line(summary) for summary in summaries)]
        return {"text": "\n".join(lines)}

    def _line(self, run: RunSummary) -> str:
        what = f"{run.repo}@{run.ref}" if run.ref else run.repo
        who = f"<@{run.requested_by}>" if run.trigger == "slack" else escape(run.requested_by)
        when = f" · {slack_time(_iso(run.started_at))}" if run.started_at else ""
        return texts.STATUS_LINE.format(
            icon=RUN_ICONS[run.state],
            url=self.links.run(run.run_id),
            run_id=run.run_id,
            what=escape(what),
            state=RUN_WORDS[run.state],
            trigger=TRIGGER_WORDS.get(run.trigger, run.trigger or "?"),
            who=who or "someone",
            when=when,
        )

    # Cancel, by command or by the progress message's button.

    async def _approve(
        self, state: BotState, user: str, run_id: str, event: str = "command"
    ) -> str:
        """Budgets (issue 14): SKYRUN_SLACK_APPROVERS may let a run over budget go."""
        if user not in self.settings.slack_approvers:
            record_slack(event, Outcome.DENIED)
            return texts.APPROVE_DENIED.format(user=user)
        try:
            problem = await state.control.approve(run_id, user, via="slack")
        except Exception as err:  # Temporal unreachable: nothing was approved, say so
            record_slack(event, Outcome.ERROR)
            return texts.APPROVE_FAILED.format(run_id=run_id, error=escape(str(err)))
        record_slack(event, Outcome.REPLIED if problem else Outcome.ACCEPTED)
        if problem:
            return escape(problem)
        return texts.APPROVED.format(user=user, url=self.links.run(run_id), run_id=run_id)

    async def _cancel(
        self, state: BotState, user: str, run_id: str, command: str, event: str
    ) -> tuple[str, bool]:
        """Cancel the run if `user` may; returns the reply and whether it was cancelled."""
        try:
            summary = await state.control.summary(run_id)
            if summary is None:  # a sweep is cancelled like a run (its runs with it)
                summary = await state.control.sweep_summary(run_id)
            if summary is None:
                record_slack(event, Outcome.REPLIED)
                return texts.UNKNOWN_RUN.format(run_id=run_id, command=command), False
            denial = cancel_denial(self.settings, user, summary)
            if denial:
                record_slack(event, Outcome.DENIED)
                return denial, False
            cancelled = await state.control.cancel(run_id)
        except Exception as err:  # Temporal unreachable: nothing was cancelled, say so
            log.warning("Slack: could not cancel %s: %s", run_id, err)
            record_slack(event, Outcome.ERROR)
            error = escape(str(err) or type(err).__name__)
            return texts.CANCEL_FAILED.format(run_id=run_id, error=error), False
        url = self.links.run(run_id)
        if not cancelled:
            record_slack(event, Outcome.REPLIED)
            state_word = RUN_WORDS[summary.state]
            return texts.NOT_RUNNING.format(url=url, run_id=run_id, state=state_word), False
        record_slack(event, Outcome.CANCELLED)
        return texts.CANCELLED.format(user=user, url=url, run_id=run_id), True

    async def cancel_button(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        state: BotState = context[STATE_KEY]
        user = str((body.get("user") or {}).get("id") or "")
        run_id = await _button_run_id(action, respond)
        if not run_id:
            return
        reply, cancelled = await self._cancel(state, user, run_id, PREFIX, "action")
        if cancelled:
            # Everyone watching the run sees who cancelled it, in the run's thread (the button
            # may also sit on a private `status` reply, which has no thread).
            container = body.get("container") or {}
            thread = None if container.get("is_ephemeral") else container.get("message_ts")
            await _send(respond, text=reply, response_type="in_channel", thread_ts=thread)
        else:
            await _send(respond, text=reply, response_type="ephemeral")

    # Retry from the failed stage, by command or by the progress message's button.

    async def _retry(
        self, state: BotState, target: SlackTarget, run_id: str, command: str, event: str
    ) -> tuple[str, bool]:
        """Retry the run if the user may start runs of its repository; (reply, started)."""
        user = target.user
        try:
            summary = await state.control.summary(run_id)
            if summary is None:
                record_slack(event, Outcome.REPLIED)
                return texts.UNKNOWN_RUN.format(run_id=run_id, command=command), False
            denial = start_denial(self.settings, user, summary.repo)
            if denial:
                record_slack(event, Outcome.DENIED)
                return denial, False
            outcome = await state.control.retry(
                run_id,
                requested_by=user,
                trigger=Trigger.SLACK,
                slack=target,
                requested_at=time.time_ns(),
            )
        except RetryRefused as err:
            record_slack(event, Outcome.REPLIED)
            return texts.RETRY_REFUSED.format(reason=escape(str(err).rstrip("."))), False
        except Exception as err:  # Temporal unreachable: nothing was started, say so
            log.warning("Slack: could not retry %s: %s", run_id, err)
            record_slack(event, Outcome.ERROR)
            error = escape(str(err) or type(err).__name__)
            return texts.RETRY_FAILED.format(run_id=run_id, error=error), False
        urls = {
            "old_url": self.links.run(run_id),
            "old_id": run_id,
            "url": self.links.run(outcome.run_id),
            "run_id": outcome.run_id,
        }
        if not outcome.started:
            record_slack(event, Outcome.DUPLICATE)
            return texts.ALREADY_RETRIED.format(**urls), False
        record_slack(event, Outcome.STARTED)
        plan = outcome.plan
        rerun = ", ".join(f"`{escape(name)}`" for name in plan.rerun)
        reused = ", ".join(f"`{escape(stage.name)}`" for stage in plan.reused)
        return (
            texts.RETRIED.format(
                user=user, rerun=rerun, reused=reused or texts.RETRY_NONE_REUSED, **urls
            ),
            True,
        )

    async def retry_button(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        state: BotState = context[STATE_KEY]
        user = str((body.get("user") or {}).get("id") or "")
        run_id = await _button_run_id(action, respond)
        if not run_id:
            return
        channel = str((body.get("channel") or {}).get("id") or "")
        target = SlackTarget(channel=channel, user=user, response_url="")
        reply, started = await self._retry(state, target, run_id, PREFIX, "action")
        if started:
            container = body.get("container") or {}
            thread = None if container.get("is_ephemeral") else container.get("message_ts")
            await _send(respond, text=reply, response_type="in_channel", thread_ts=thread)
        else:
            await _send(respond, text=reply, response_type="ephemeral")

    async def approve_button(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        """Budgets (issue 14): as `/skyrun approve RUN`, for SKYRUN_SLACK_APPROVERS."""
        await ack()
        state: BotState = context[STATE_KEY]
        user = str((body.get("user") or {}).get("id") or "")
        run_id = await _button_run_id(action, respond)
        if not run_id:
            return
        reply = await self._approve(state, user, run_id, "action")
        await _send(respond, text=reply, response_type="ephemeral")

    async def link_button(self, ack: AsyncAck) -> None:
        """URL buttons open in the browser; Slack still expects their click acknowledged."""
        await ack()


async def _ack(ack: AsyncAck, text: str) -> None:
    """Acknowledge with a reply only the requester sees."""
    await ack(text=text, response_type="ephemeral")


async def _button_run_id(action: dict[str, Any], respond: AsyncRespond) -> str:
    """The run a button acts on; "" (after telling the user) when its value is no run id:
    skyrun's buttons carry run ids, nothing else."""
    run_id = str(action.get("value") or "")
    if RUN_ID_RE.fullmatch(run_id):
        return run_id
    record_slack("action", Outcome.REPLIED)
    error = _sentence(E_BAD_RUN_ID.format(word=quoted(run_id)))
    await _send(respond, text=texts.BAD_BUTTON.format(error=error))
    return ""


def _sentence(error: str) -> str:
    """The parser's error as the start of a Slack sentence."""
    return error[:1].upper() + error[1:]


def _iso(when: datetime) -> str:
    return when.isoformat()


async def _send(respond: AsyncRespond, **message: Any) -> None:
    """Reply through the request's response URL; if Slack is unreachable, log it and move on."""
    try:
        await respond(replace_original=False, **message)
    except Exception as err:
        log.warning("Slack: could not reply through response_url: %s", err)


def build_bolt_app(settings: Settings) -> AsyncApp:
    """The Bolt app, built explicitly from settings (no environment lookups, no network)."""
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        raise ValueError(SLACK_OFF)
    token = settings.slack_bot_token.get_secret_value()

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        # One workspace, one bot token: no auth.test, so Slack's Web API being down is harmless.
        return AuthorizeResult(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=token
        )

    app = AsyncApp(
        name="skyrun",
        logger=log,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        client=AsyncWebClient(base_url=settings.slack_api_url),
        authorize=authorize,
        request_verification_enabled=True,
    )
    handlers = SlackHandlers(settings)
    app.command(re.compile(r"^/"))(handlers.command)
    app.action(ACTION_CANCEL)(handlers.cancel_button)
    app.action(ACTION_RETRY)(handlers.retry_button)
    app.action(ACTION_APPROVE)(handlers.approve_button)
    app.action(re.compile("^" + re.escape(ACTION_LINK_PREFIX)))(handlers.link_button)
    return app


async def slack_off(request: Request) -> Response:
    return PlainTextResponse(SLACK_OFF, status_code=404)


def _signed(secret: bytes, body: bytes, request: Request) -> bool:
    """Slack's v0 signature over the raw bytes (slack_sdk's verifier decodes them first, so a
    body that is not UTF-8 could never be told apart from a forgery)."""
    timestamp = request.headers.get("x-slack-request-timestamp", "")
    signature = request.headers.get("x-slack-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW_S:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = b"v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, signature.encode("latin-1"))


def _content_type(request: Request) -> str | None:
    """The media type exactly as Bolt reads it (it decides JSON or form the same way)."""
    header = request.headers.get("content-type")
    return header.split(";")[0] if header else None


def _refusal(status: int, message: str) -> Response:
    record_slack("other", Outcome.REJECTED)
    safe = message.encode("ascii", "backslashreplace").decode("ascii")
    return JSONResponse({"error": safe}, status_code=status)


def routes(settings: Settings) -> list[BaseRoute]:
    """`POST /slack/events`; without Slack settings it answers 404 saying so."""
    if not settings.slack_configured:
        return [Route(PATH, slack_off, methods=["POST"])]
    bolt = build_bolt_app(settings)
    assert settings.slack_signing_secret is not None
    secret = settings.slack_signing_secret.get_secret_value().encode()

    async def events(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _refusal(413, TOO_LARGE)
        body = await read_capped(request, MAX_BODY_BYTES)
        if body is None:
            return _refusal(413, TOO_LARGE)
        if not _signed(secret, body, request):
            return _refusal(401, UNSIGNED)
        try:
            checked(body, _content_type(request))
            bolt_request = to_async_bolt_request(request, body, {STATE_KEY: request.app.state.bot})
        except RequestError as err:
            log.warning("Slack: refused a signed request (%s): %s", err.status, ascii(str(err)))
            return _refusal(err.status, str(err))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError, RecursionError) as err:
            # Bolt's context builder read a field of a type Slack never sends.
            log.warning("Slack: unreadable signed request: %r", err)
            return _refusal(400, E_UNREADABLE)
        return to_starlette_response(await bolt.async_dispatch(bolt_request))

    return [Route(PATH, events, methods=["POST"])]
