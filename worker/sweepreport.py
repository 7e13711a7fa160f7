"""The `report_sweep` activity: the sweep's one pull request comment or Slack message, created
when the sweep starts and edited in place as its runs finish.

Each report reads every run's progress (a query, answered by any worker), looks the baseline up
once (worker/baseline.py's rule, for the sweep as a whole) and renders worker/sweeptable.py's
table. What it created comes back as handles, so the next report edits instead of posting; the
first report of a pull request comment looks for an earlier attempt's comment by its tag.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from worker.baseline import HANDLE as BASELINE
from worker.baseline import LOOKUP_TIMEOUT_S, Baseline, Baselines, baseline_ref
from worker.contract import RunProgress
from worker.links import Links
from worker.masking import Masker
from worker.runcontrol import RunControl
from worker.settings import Settings
from worker.sweepspec import SweepReportInput, SweepReportOutput, combinations
from worker.sweeptable import SweepRow, SweepView, comment, is_comment, slack_blocks, slack_text

if TYPE_CHECKING:
    from worker.github.auth import GitHubAuth
    from worker.github.service import GitHubServices

log = logging.getLogger(__name__)

REPORT_SWEEP = "report_sweep"
COMMENT = "comment"
DIGEST = "digest"
ROCKET = "rocket"
CHANNEL = "channel"
TS = "ts"
PROGRESS_TIMEOUT_S = 10.0
SLACK_ERROR = "SlackError"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resumed(handles: dict[str, str]) -> dict[str, str]:
    """The handles, plus what an earlier attempt saved in its heartbeat before it failed."""
    merged = dict(handles)
    if activity.in_activity():
        details = activity.info().heartbeat_details
        if details and isinstance(details[0], dict):
            merged.update({str(k): str(v) for k, v in details[0].items()})
    return merged


def _checkpoint(handles: dict[str, str]) -> None:
    if activity.in_activity():
        activity.heartbeat(dict(handles))


class SweepReporting:
    """Bound to the worker's Temporal client (the runs' progress, the baseline), its GitHub auth
    and its Slack client, when configured."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        github: GitHubServices | None = None,
        slack: AsyncWebClient | None = None,
    ) -> None:
        self.control = RunControl(client, settings.temporal_task_queue)
        self.baselines = Baselines(client, settings.temporal_task_queue)
        self.links = Links(settings)
        self.auth: GitHubAuth | None = github.auth if github and github.configured else None
        self.masker = github.auth.masker if github is not None else Masker.from_settings(settings)
        if slack is None and settings.slack_configured:
            from worker.slack.reporter import make_client

            slack = make_client(settings)
        self.slack = slack

    @activity.defn(name=REPORT_SWEEP)
    async def report(self, data: SweepReportInput) -> SweepReportOutput:
        handles = _resumed(data.handles)
        rows = await self._rows(data)
        probe = self._probe(data)
        baseline = await self._baseline(probe, rows, handles)
        view = SweepView(
            sweep_id=data.status.sweep_id,
            request=data.request,
            rows=rows,
            links=self.links,
            state=data.status.state,
            baseline=baseline,
            base_ref=baseline_ref(probe) if BASELINE in handles else "",
            error=data.status.error,
        )
        base = data.request.base
        if base.github is not None and base.github.pr_number and self.auth is not None:
            handles.update(await asyncio.to_thread(self._comment, data, view, dict(handles)))
        if base.slack is not None and base.slack.channel and self.slack is not None:
            await self._message(data, view, handles)
        return SweepReportOutput(handles)

    async def _rows(self, data: SweepReportInput) -> list[SweepRow]:
        combos = combinations(data.request.axes)
        found = await asyncio.gather(*(self._progress(run) for run in data.status.run_ids))
        return [
            SweepRow(index, combos[index], run_id, progress)
            for index, (run_id, progress) in enumerate(zip(data.status.run_ids, found, strict=True))
        ]

    async def _progress(self, run_id: str) -> RunProgress | None:
        try:
            return await asyncio.wait_for(self.control.progress(run_id), PROGRESS_TIMEOUT_S)
        except Exception as err:  # a run that does not answer yet is shown as queued
            log.info("sweep: no progress from run %s yet: %r", run_id, err)
            return None

    @staticmethod
    def _probe(data: SweepReportInput) -> RunProgress:
        """The sweep as one run, for the baseline rule: its runs' repository, branch and PR, and
        the sweep's start (so none of its own runs is ever its baseline)."""
        base = data.request.base
        return RunProgress(
            run_id=data.status.sweep_id,
            repo=base.repo,
            ref=base.ref,
            commit=base.commit,
            trigger=base.trigger,
            requested_by=base.requested_by,
            started_at=data.status.started_at,
            pr_number=base.github.pr_number if base.github else None,
            base_ref=(base.github.base_branch or "") if base.github else "",
        )

    async def _baseline(
        self, probe: RunProgress, rows: list[SweepRow], handles: dict[str, str]
    ) -> Baseline | None:
        """Looked up once, when a run has metrics to compare; a failed lookup is tried again."""
        if BASELINE not in handles and baseline_ref(probe) and any(row.metrics for row in rows):
            try:
                found = await asyncio.wait_for(self.baselines.of(probe), LOOKUP_TIMEOUT_S)
            except Exception as err:  # the comparison is a nicety: never fail a report for it
                log.warning("no baseline for sweep %s yet: %r", probe.run_id, err)
            else:
                handles[BASELINE] = found.dumps() if found else ""
        return Baseline.loads(handles.get(BASELINE, ""))

    def _comment(
        self, data: SweepReportInput, view: SweepView, handles: dict[str, str]
    ) -> dict[str, str]:
        from worker.github.auth import api_errors

        auth = self.auth
        base = data.request.base
        target = base.github
        assert auth is not None and target is not None and target.pr_number
        body = comment(view, self.masker)
        digest = _digest(body)
        out: dict[str, str] = {}
        with api_errors(auth):
            repo = auth.client(base.repo, target.installation_id).get_repo(base.repo)
            issue = repo.get_issue(target.pr_number)
            comment_id = handles.get(COMMENT)
            if comment_id:
                if handles.get(DIGEST) != digest:
                    issue.get_comment(int(comment_id)).edit(body)
            else:
                # An earlier report may have posted before it failed: one listing finds it.
                ours = next(
                    (c for c in issue.get_comments() if is_comment(c.body or "", view.sweep_id)),
                    None,
                )
                if ours is not None:
                    ours.edit(body)
                    comment_id = str(ours.id)
                else:
                    comment_id = str(issue.create_comment(body).id)
            out[COMMENT], out[DIGEST] = comment_id, digest
            if target.comment_id and ROCKET not in handles:
                issue.get_comment(target.comment_id).create_reaction("rocket")
                out[ROCKET] = "1"
        return out

    async def _message(
        self, data: SweepReportInput, view: SweepView, handles: dict[str, str]
    ) -> None:
        from worker.slack.reporter import FATAL, slack_error

        assert self.slack is not None and data.request.base.slack is not None
        text = self.masker.mask(slack_text(view))
        blocks = slack_blocks(view, self.masker)
        digest = _digest(text + repr(blocks))
        try:
            if handles.get(TS):
                if handles.get(DIGEST) != digest:
                    await self.slack.chat_update(
                        channel=handles[CHANNEL], ts=handles[TS], text=text, blocks=blocks
                    )
            else:
                response = await self.slack.chat_postMessage(
                    channel=data.request.base.slack.channel,
                    text=text,
                    blocks=blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                )
                handles[CHANNEL], handles[TS] = str(response["channel"]), str(response["ts"])
                _checkpoint(handles)
        except SlackApiError as err:
            error = slack_error(err)
            raise ApplicationError(
                f"Slack API error: {error}", type=SLACK_ERROR, non_retryable=error in FATAL
            ) from None
        handles[DIGEST] = digest
