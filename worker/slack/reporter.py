"""The Slack reporter: one message per run in the channel that asked (or the pipeline's notify
channel), updated in place at every change, with a thread reply whenever a stage or the run ends.

It runs inside the `report_progress` activity, so Temporal retries it; what it has posted so far
(channel, message ts, replies sent) and the run's baseline come back as handles on the next call,
and are saved in the activity's heartbeat as soon as they exist, so a retried attempt never posts
a second message.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from worker.baseline import HANDLE as BASELINE
from worker.baseline import Baseline, Baselines, baseline_ref
from worker.contract import RunProgress, StageState
from worker.links import Links
from worker.masking import Masker
from worker.models import ReportInput
from worker.settings import Settings
from worker.slack import texts
from worker.slack.blocks import fallback_text, final_reply, run_blocks, stage_reply

log = logging.getLogger(__name__)

CHANNEL = "channel"
TS = "ts"
BLOCKED = "blocked"
"""Set when the bot cannot post in the channel: Slack reporting of this run stops there."""
REPLIED = "replied:"
HTTP_TIMEOUT_S = 15
SLACK_ERROR = "SlackError"
UNREACHABLE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
# Errors no retry can fix: fail the activity at once (the run goes on regardless).
FATAL = UNREACHABLE | frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        "restricted_action",
    }
)
FINISHED_STAGES = (StageState.SUCCEEDED, StageState.FAILED, StageState.CANCELLED)


def make_client(settings: Settings) -> AsyncWebClient:
    """The Web API client: Slack's rate-limit answers are waited out, other errors are raised."""
    if settings.slack_bot_token is None:
        raise ValueError("SLACK_BOT_TOKEN is not set")
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=HTTP_TIMEOUT_S,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ],
    )


def slack_error(err: SlackApiError) -> str:
    data: Any = err.response.data if err.response is not None else None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    status = err.response.status_code if err.response is not None else "?"
    return f"HTTP {status}"


def _failure(err: SlackApiError) -> ApplicationError:
    error = slack_error(err)
    return ApplicationError(
        f"Slack API error: {error}", type=SLACK_ERROR, non_retryable=error in FATAL
    )


def _resumed(handles: dict[str, str]) -> dict[str, str]:
    """The handles, plus what an earlier attempt of this activity saved before it failed."""
    merged = dict(handles)
    if activity.in_activity():
        details = activity.info().heartbeat_details
        if details and isinstance(details[0], dict):
            merged.update({str(k): str(v) for k, v in details[0].items()})
    return merged


def _checkpoint(handles: dict[str, str]) -> None:
    if activity.in_activity():
        activity.heartbeat(dict(handles))


class SlackReporter:
    name = "slack"

    def __init__(
        self,
        settings: Settings,
        *,
        client: AsyncWebClient | None = None,
        temporal: Client | None = None,
        masker: Masker | None = None,
    ) -> None:
        """`temporal` finds the metrics baseline (worker/baseline.py, among this deployment's
        runs); by default the worker's own client. `masker` (by default one of the settings'
        secrets) masks what is posted."""
        self.client = client or make_client(settings)
        self.masker = masker or Masker.from_settings(settings)
        self.links = Links(settings)
        self.run_pages = settings.run_pages
        self.task_queue = settings.temporal_task_queue
        self._temporal = temporal

    async def report(self, data: ReportInput) -> dict[str, str]:
        # Masked before rendering, so no cut to Slack's limits can leave part of a secret.
        data = dataclasses.replace(data, progress=self.masker.mask_data(data.progress))
        handles = _resumed(data.handles)
        channel = handles.get(CHANNEL) or self._channel(data)
        if not channel and not handles.get(BLOCKED):
            return handles
        progress = data.progress
        baseline = await self._baseline(data, handles) if progress.state.finished else None
        if handles.get(BLOCKED):
            await self._report_elsewhere(data, handles, baseline)
            return handles
        try:
            await self._show(handles, channel, progress, baseline)
            for key, reply in self._replies(progress):
                if handles.get(key):
                    continue
                await self.client.chat_postMessage(
                    channel=handles[CHANNEL],
                    thread_ts=handles[TS],
                    text=self.masker.mask(reply),
                    unfurl_links=False,
                    unfurl_media=False,
                )
                handles[key] = "1"
                _checkpoint(handles)
        except SlackApiError as err:
            if slack_error(err) in UNREACHABLE and not handles.get(TS):
                await self._block(data, handles, channel, slack_error(err))
                return handles
            raise _failure(err) from None
        return handles

    @staticmethod
    def _channel(data: ReportInput) -> str:
        if data.request.slack is not None and data.request.slack.channel:
            return data.request.slack.channel
        return data.notify_slack

    async def _baseline(self, data: ReportInput, handles: dict[str, str]) -> Baseline | None:
        """The run's baseline, looked up once (kept in `handles`, like the GitHub reporter)."""
        if not data.progress.metrics:
            return None
        client = self._temporal or activity.client()
        return await Baselines(client, self.task_queue).remembered(data.progress, handles)

    async def _show(
        self,
        handles: dict[str, str],
        channel: str,
        progress: RunProgress,
        baseline: Baseline | None,
    ) -> None:
        """Update the run's message in place, or post it when there is none (any more)."""
        text = self.masker.mask(fallback_text(progress))
        blocks = self._blocks(progress, handles, baseline)
        if handles.get(TS):
            try:
                await self.client.chat_update(
                    channel=handles[CHANNEL], ts=handles[TS], text=text, blocks=blocks
                )
                return
            except SlackApiError as err:
                if slack_error(err) != "message_not_found":
                    raise
                log.info("Slack message of run %s was deleted; posting it again", progress.run_id)
        response = await self.client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
        )
        handles[CHANNEL] = str(response["channel"])
        handles[TS] = str(response["ts"])
        _checkpoint(handles)

    def _blocks(
        self, progress: RunProgress, handles: dict[str, str], baseline: Baseline | None
    ) -> list[dict[str, Any]]:
        """The run's message, masked; "no baseline" is said only once the lookup has answered."""
        return run_blocks(
            progress,
            self.links,
            baseline=baseline,
            compared_on=baseline_ref(progress) if BASELINE in handles else "",
            run_pages=self.run_pages,
            masker=self.masker,
        )

    def _replies(self, progress: RunProgress) -> Iterator[tuple[str, str]]:
        """Thread replies due by now, keyed so each is sent once."""
        for stage in progress.stages:
            if stage.state in FINISHED_STAGES:
                reply = stage_reply(progress, stage, self.links, run_pages=self.run_pages)
                yield f"{REPLIED}stage:{stage.name}", reply
        if progress.state.finished:
            yield f"{REPLIED}final", final_reply(progress, self.links, run_pages=self.run_pages)

    async def _block(
        self, data: ReportInput, handles: dict[str, str], channel: str, error: str
    ) -> None:
        """The bot may not post in the channel: say so to whoever asked, then stop trying."""
        log.warning(texts.NOT_IN_CHANNEL_LOG, channel, error, data.run_id)
        handles[BLOCKED] = error
        _checkpoint(handles)
        text = texts.NOT_IN_CHANNEL.format(
            error=error, url=self.links.run(data.run_id), run_id=data.run_id
        )
        await self._respond(data, text)

    async def _report_elsewhere(
        self, data: ReportInput, handles: dict[str, str], baseline: Baseline | None
    ) -> None:
        """Blocked from the channel: send the outcome privately to whoever asked (best effort)."""
        key = f"{REPLIED}final"
        progress = data.progress
        if not progress.state.finished or handles.get(key):
            return
        handles[key] = "1"
        blocks = self._blocks(progress, handles, baseline)
        await self._respond(data, fallback_text(progress), blocks)

    async def _respond(
        self, data: ReportInput, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        target = data.request.slack
        if target is None or not target.response_url:
            return
        try:
            response = await AsyncWebhookClient(target.response_url, timeout=HTTP_TIMEOUT_S).send(
                text=self.masker.mask(text),
                blocks=self.masker.mask_data(blocks),
                response_type="ephemeral",
                replace_original=False,
            )
            if response.status_code != 200:
                log.warning("Slack response_url answered %s", response.status_code)
        except Exception as err:  # response URLs expire after 30 minutes; nothing else to try
            log.warning("could not reach Slack response_url for run %s: %s", data.run_id, err)
