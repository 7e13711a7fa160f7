"""Run pages, logs and their JSON twins: read-only views over Temporal visibility and queries.

Live pages poll an HTML fragment of themselves (`?fragment=1`) and swap it in, so every view is
rendered by the same templates; logs are served from the log store, following the file while
the run's progress says the stage is running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

from cachetools import TTLCache
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from temporalio.service import RPCError

from bot.state import BotState
from worker.contract import RunProgress, RunState, StageProgress, StageState, Trigger
from worker.links import GitHubHost, Links
from worker.logparse import strip_ansi, tail_lines
from worker.logstore import LogNotFound, LogStore
from worker.masking import Masker
from worker.runcontrol import RunSummary, runs_query, summary_of
from worker.settings import Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC_DIR = HERE / "static"

# Texts users read.
UNKNOWN_RUN = "No run with id {run_id} on this server."
UNKNOWN_RUN_HINT = (
    "Runs are kept as long as Temporal's retention allows; a run started by another skyrun "
    "deployment (another task queue) is not listed here either."
)
UNKNOWN_LOG = "no log for stage {stage} of run {run_id} (the stage has not written one yet)"
PAGES_OFF = "run pages are turned off on this server (SKYRUN_RUN_PAGES=false)"
BAD_PR = "pr must be a number, not {value!r}"
BAD_CHOICE = "unknown {name} {value!r}; use one of: {choices}"
DETAILS_UNAVAILABLE = (
    "No worker answered for this run's details ({reason}), so this shows only what Temporal's "
    "run list knows. Start a worker (skyrun worker, or skyrun dev) to see stages and logs."
)
QUERY_FAILED = "its progress query failed"
QUERY_TIMED_OUT = "no answer in time"
TEMPORAL_DOWN = (
    "Temporal is not reachable ({error}); runs and their progress come from it. "
    "Check TEMPORAL_ADDRESS, or run: skyrun check"
)
TRIGGER_LABELS = {
    Trigger.PUSH.value: "push",
    Trigger.COMMENT.value: "PR comment",
    Trigger.PULL_REQUEST.value: "pull request",
    Trigger.SLACK.value: "Slack",
    Trigger.CLI.value: "CLI",
}

FILTERS = ("repo", "ref", "pr", "state", "trigger")
PAGE_SIZE = 50
"""Runs on one list page (newest first); their metrics are fetched concurrently."""
HEADLINE_METRICS = 3
CONCURRENCY = 8
QUERY_TIMEOUT_S = 5.0
LIST_DEADLINE_S = 3.0
"""How long a list waits for its runs' progress (metrics); late answers are left out."""
BASELINE_TRIES = 3
LIVE_TAIL_LINES = 40
TAIL_BYTES = 64 * 1024
LOG_CHUNK = 64 * 1024
FOLLOW_POLL_S = 0.25
FOLLOW_CHECK_S = 1.0
FOLLOW_GIVE_UP_S = 120.0
"""A followed log ends when the run's progress cannot be read for this long."""
RUN_POLL_MS = 2000
LIST_POLL_MS = 5000
SECURITY_HEADERS = {
    # Reports are user Markdown (raw HTML is escaped); the policy is a second fence.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

TEMPORAL_ERRORS: tuple[type[Exception], ...] = (RPCError, RuntimeError)
"""What a Temporal call raises when the server is unreachable (a lazy client's failed connect
is a RuntimeError) or refuses."""
UNANSWERED: tuple[type[Exception], ...] = (TimeoutError, *TEMPORAL_ERRORS)
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
_MARKDOWN = MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False})
_EPOCH = datetime.min.replace(tzinfo=UTC)


class FilterError(ValueError):
    pass


def parse_filters(params: Mapping[str, str]) -> dict[str, Any]:
    """The list filters in a query string, checked; raises FilterError saying what is wrong."""
    filters: dict[str, Any] = {}
    for name in FILTERS:
        value = params.get(name, "").strip()
        if not value:
            continue
        if name == "pr":
            if not value.isdigit():
                raise FilterError(BAD_PR.format(value=value))
            filters[name] = int(value)
            continue
        choices = {"state": [s.value for s in RunState], "trigger": [t.value for t in Trigger]}
        if name in choices and value not in choices[name]:
            raise FilterError(
                BAD_CHOICE.format(name=name, value=value, choices=", ".join(choices[name]))
            )
        filters[name] = value
    state = filters.get("state")
    if state is not None and not RunState(state).finished:
        # A terminated workflow keeps its last state attribute; only open ones are live.
        filters["running_only"] = True
    return filters


def render_markdown(text: str) -> Markup:
    """A task's report as HTML; raw HTML in it is escaped and unsafe link schemes are dropped."""
    return Markup(_MARKDOWN.render(text))


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def elapsed_s(
    started: str | datetime | None, finished: str | datetime | None, now: datetime
) -> float | None:
    """Seconds from start to finish, or to `now` while not finished; None before it started."""
    start = parse_time(started) if isinstance(started, str) else started
    end = parse_time(finished) if isinstance(finished, str) else finished
    if start is None:
        return None
    return max(0.0, ((end or now) - start).total_seconds())


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def format_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def format_delta(value: float) -> str:
    return "±0" if value == 0 else f"{value:+.4g}"


def format_time(value: str | datetime | None) -> str:
    when = parse_time(value) if isinstance(value, str) else value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def repo_name(repo: str) -> str:
    """`owner/name` as is; for a URL or local path, its last part (the full text is a tooltip)."""
    if _GITHUB_REPO.match(repo):
        return repo
    return repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or repo


def iso_time(value: str | datetime | None) -> str:
    when = parse_time(value) if isinstance(value, str) else value
    return when.isoformat() if when else ""


TEMPLATES.env.filters.update(
    markdown=render_markdown,
    duration=format_duration,
    number=format_number,
    delta=format_delta,
    when=format_time,
    iso=iso_time,
    repo_name=repo_name,
)


@dataclass
class Paths:
    """Links inside the pages: root-relative, so they work from whatever host served the page."""

    root: str = ""

    def runs(self, **filters: Any) -> str:
        query = urlencode({k: v for k, v in filters.items() if v not in (None, "")})
        return f"{self.root}/runs" + (f"?{query}" if query else "")

    def run(self, run_id: str) -> str:
        return f"{self.root}/runs/{quote(run_id, safe='')}"

    def log(self, run_id: str, stage: str) -> str:
        return f"{self.run(run_id)}/logs/{quote(stage, safe='')}"

    def api(self, run_id: str) -> str:
        return f"{self.root}/api/runs/{quote(run_id, safe='')}"

    def static(self, name: str, version: str) -> str:
        return f"{self.root}/static/{name}?v={version}"


@dataclass
class RunLinks:
    page: str
    api: str
    temporal: str
    dashboard: str = ""
    repo: str = ""
    commit: str = ""
    pr: str = ""
    ref: str = ""


def run_links(progress: RunProgress, links: Links, github: str) -> RunLinks:
    out = RunLinks(
        page=links.run(progress.run_id),
        api=links.api(progress.run_id),
        temporal=links.temporal(progress.run_id),
        dashboard=progress.dashboard_url,
    )
    if _GITHUB_REPO.match(progress.repo):
        out.repo = f"{github}/{progress.repo}"
        if progress.commit:
            out.commit = f"{out.repo}/commit/{quote(progress.commit)}"
        if progress.pr_number is not None:
            out.pr = f"{out.repo}/pull/{progress.pr_number}"
        if progress.ref:
            out.ref = f"{out.repo}/tree/{quote(progress.ref, safe='/')}"
    return out


@dataclass
class MetricView:
    name: str
    value: float
    base: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.base is None else self.value - self.base


@dataclass
class StageView:
    stage: StageProgress
    duration_s: float | None
    tail: list[str]
    log_url: str
    live: bool


@dataclass
class RunView:
    run: RunProgress
    live: bool
    duration_s: float | None
    trigger: str
    stages: list[StageView]
    metrics: list[MetricView]
    links: RunLinks
    baseline: RunProgress | None = None
    notice: str = ""


@dataclass
class RunRow:
    """One line of the runs list: visibility's summary and, when the run answered, its metrics."""

    summary: RunSummary
    duration_s: float | None
    trigger: str
    live: bool
    metrics: dict[str, float] | None = None
    error: str = ""
    commit: str = ""
    """The resolved commit (visibility only knows it when the trigger named one)."""

    @property
    def headline(self) -> list[tuple[str, float]]:
        return list((self.metrics or {}).items())[:HEADLINE_METRICS]


def headline_metrics(progress: RunProgress) -> dict[str, float]:
    """The run's metrics, those of later stages (evaluation) first."""
    ordered: dict[str, float] = {}
    for stage in reversed(progress.stages):
        for name, value in stage.metrics.items():
            ordered.setdefault(name, value)
    return ordered


def progress_from_summary(summary: RunSummary) -> RunProgress:
    """A stand-in progress when no worker answers: what visibility alone knows."""
    trigger = Trigger(summary.trigger) if summary.trigger in TRIGGER_LABELS else Trigger.CLI
    return RunProgress(
        run_id=summary.run_id,
        repo=summary.repo,
        ref=summary.ref,
        commit=summary.commit,
        trigger=trigger,
        requested_by=summary.requested_by,
        state=summary.state,
        started_at=summary.started_at.isoformat() if summary.started_at else "",
        finished_at=summary.finished_at.isoformat() if summary.finished_at else "",
        pr_number=summary.pr_number,
    )


def base_ref(progress: RunProgress) -> str:
    """The branch whose last good run this one is compared with; "" when unknown.

    A PR run compares with its base branch once the contract carries it (`base_ref`); other runs
    with the last good run of their own branch.
    """
    base: str = getattr(progress, "base_ref", "") or ""
    return base or ("" if progress.pr_number is not None else progress.ref)


def read_tail(
    logs: LogStore, run_id: str, stage: str, masker: Masker, count: int = LIVE_TAIL_LINES
) -> list[str]:
    """The last lines of a stage's log, read from its end (the file may be large and growing);
    nothing when the store has no regular file for it."""
    try:
        handle = logs.open_read(run_id, stage)
    except LogNotFound:
        return []
    with handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - TAIL_BYTES))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    if size > TAIL_BYTES:
        text = text.split("\n", 1)[-1]
    # Masked before the lines are cut to width, so no cut leaves part of a secret.
    return tail_lines(masker.mask(text), count)


def build_view(
    progress: RunProgress,
    *,
    links: Links,
    github: str,
    now: datetime,
    live_tails: Mapping[str, list[str]],
    baseline: RunProgress | None = None,
    notice: str = "",
) -> RunView:
    """Everything a run page shows, computed without I/O."""
    live = not progress.state.finished
    stages = []
    for stage in progress.stages:
        running = live and stage.state is StageState.RUNNING
        duration = (
            stage.duration_s
            if stage.duration_s is not None
            else elapsed_s(stage.started_at, stage.finished_at, now)
        )
        stages.append(
            StageView(
                stage=stage,
                duration_s=duration,
                tail=live_tails.get(stage.name) or stage.log_tail,
                log_url=links.log(progress.run_id, stage.name),
                live=running,
            )
        )
    base_metrics = baseline.metrics if baseline else {}
    metrics = [
        MetricView(name, value, base_metrics.get(name))
        for name, value in headline_metrics(progress).items()
    ]
    return RunView(
        run=progress,
        live=live,
        duration_s=elapsed_s(progress.started_at, progress.finished_at, now),
        trigger=TRIGGER_LABELS.get(progress.trigger.value, progress.trigger.value),
        stages=stages,
        metrics=metrics,
        links=run_links(progress, links, github),
        baseline=baseline,
        notice=notice,
    )


def view_json(view: RunView, links: Links) -> dict[str, Any]:
    data = dataclasses.asdict(view.run)
    data["metrics"] = view.run.metrics
    data["live"] = view.live
    data["duration_s"] = view.duration_s
    data["trigger_label"] = view.trigger
    for stage, stage_view in zip(data["stages"], view.stages, strict=True):
        stage["log_url"] = stage_view.log_url
        stage["log_tail"] = stage_view.tail
        stage["elapsed_s"] = stage_view.duration_s
    data["links"] = dataclasses.asdict(view.links)
    data["baseline"] = None
    if view.baseline is not None:
        data["baseline"] = {
            "run_id": view.baseline.run_id,
            "ref": view.baseline.ref,
            "commit": view.baseline.commit,
            "url": links.run(view.baseline.run_id),
            "metrics": view.baseline.metrics,
            "deltas": {m.name: m.delta for m in view.metrics if m.delta is not None},
        }
    data["notice"] = view.notice
    return data


def row_json(row: RunRow, links: Links) -> dict[str, Any]:
    summary = row.summary
    data = dataclasses.asdict(summary)
    data["started_at"] = iso_time(summary.started_at) or None
    data["finished_at"] = iso_time(summary.finished_at) or None
    data["duration_s"] = row.duration_s
    data["live"] = row.live
    data["trigger_label"] = row.trigger
    data["metrics"] = row.metrics
    data["error"] = row.error
    data["commit"] = row.commit
    data["url"] = links.run(summary.run_id)
    data["api_url"] = links.api(summary.run_id)
    return data


def _asset_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.glob("*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


class RunPages:
    """The run pages' endpoints, with a small cache of finished runs (their progress is final)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.links = Links(settings)
        self.github = GitHubHost.of(settings).web_url
        self.asset_version = _asset_version()
        self.masker = Masker.from_settings(settings)
        """The bot's own settings' secrets, masked out of every view: a second line of defence
        behind the worker's masking of the logs and progress it writes."""
        self._finished: TTLCache[str, RunProgress] = TTLCache(maxsize=2048, ttl=3600)
        self._baselines: TTLCache[str, RunProgress | None] = TTLCache(maxsize=512, ttl=60)

    # Loading.

    async def progress(
        self, state: BotState, run_id: str, timeout: float = QUERY_TIMEOUT_S
    ) -> RunProgress | None:
        """The run's progress (None: no such run); raises TimeoutError or a Temporal error."""
        if (cached := self._finished.get(run_id)) is not None:
            return cached
        progress = await asyncio.wait_for(state.control.progress(run_id), timeout)
        progress = self.masker.mask_data(progress)
        if progress is not None and progress.state.finished:
            self._finished[run_id] = progress
        return progress

    async def _load(self, state: BotState, run_id: str) -> tuple[RunProgress | None, str]:
        """The run's progress, or a stand-in from visibility (with a notice) when none answers."""
        reason = QUERY_FAILED
        try:
            progress = await self.progress(state, run_id)
        except UNANSWERED as err:
            reason = QUERY_TIMED_OUT if isinstance(err, TimeoutError) else str(err)
            log.warning("progress query failed: %s", reason, extra={"run_id": run_id})
        else:
            if progress is not None:
                return progress, ""
        # Unknown, or known to visibility but silent: one describe call tells which.
        summary = await state.control.summary(run_id)
        if summary is None:
            return None, ""
        return progress_from_summary(summary), DETAILS_UNAVAILABLE.format(reason=reason)

    async def _baseline(self, state: BotState, progress: RunProgress) -> RunProgress | None:
        """The last successful earlier run of the base branch, to show metric changes against."""
        ref = base_ref(progress)
        if not ref or not progress.metrics:
            return None
        if progress.run_id in self._baselines:
            return self._baselines[progress.run_id]
        started = parse_time(progress.started_at)
        query = runs_query(
            task_queue=self.settings.temporal_task_queue,
            repo=progress.repo,
            ref=ref,
            state="succeeded",
        )
        candidates = [summary_of(e) async for e in state.client.list_workflows(query, limit=20)]
        candidates.sort(key=lambda s: s.started_at or _EPOCH, reverse=True)
        earlier = [
            c
            for c in candidates
            if c.run_id != progress.run_id
            and c.pr_number is None
            and not (started and c.started_at and c.started_at >= started)
        ]
        found: RunProgress | None = None
        for candidate in earlier[:BASELINE_TRIES]:
            try:
                found = await self.progress(state, candidate.run_id, LIST_DEADLINE_S)
            except UNANSWERED:
                found = None
            if found is not None and found.metrics:
                break
            found = None
        self._baselines[progress.run_id] = found
        return found

    async def _view(self, state: BotState, progress: RunProgress, notice: str) -> RunView:
        running = [
            s.name
            for s in progress.stages
            if s.state is StageState.RUNNING and not progress.state.finished
        ]
        tails: dict[str, list[str]] = {}
        for name in running:
            tails[name] = await asyncio.to_thread(
                read_tail, state.logs, progress.run_id, name, self.masker
            )
        try:
            baseline = await self._baseline(state, progress)
        except TEMPORAL_ERRORS as err:
            log.warning("baseline lookup failed: %s", err, extra={"run_id": progress.run_id})
            baseline = None
        return build_view(
            progress,
            links=self.links,
            github=self.github,
            now=datetime.now(UTC),
            live_tails=tails,
            baseline=baseline,
            notice=notice,
        )

    async def _rows(self, state: BotState, filters: dict[str, Any]) -> list[RunRow]:
        query = runs_query(task_queue=self.settings.temporal_task_queue, **filters)
        summaries = [
            summary_of(e) async for e in state.client.list_workflows(query, limit=PAGE_SIZE)
        ]
        summaries.sort(key=lambda s: s.started_at or _EPOCH, reverse=True)
        answers = await self._answers(state, [s.run_id for s in summaries])
        now = datetime.now(UTC)
        rows = []
        for summary in summaries:
            progress = answers.get(summary.run_id)
            rows.append(
                RunRow(
                    summary=summary,
                    duration_s=elapsed_s(summary.started_at, summary.finished_at, now),
                    trigger=TRIGGER_LABELS.get(summary.trigger, summary.trigger),
                    live=not summary.state.finished,
                    metrics=headline_metrics(progress) if progress else None,
                    error=progress.error if progress else "",
                    commit=(progress.commit if progress else "") or summary.commit,
                )
            )
        return rows

    async def _answers(self, state: BotState, run_ids: list[str]) -> dict[str, RunProgress]:
        """Progress of many runs, queried concurrently; what has not answered by the deadline
        (a run whose worker is gone) is left out rather than holding up the page."""
        cached = {run_id: self._finished.get(run_id) for run_id in run_ids}
        found = {run_id: progress for run_id, progress in cached.items() if progress is not None}
        missing = [run_id for run_id, progress in cached.items() if progress is None]
        if not missing:
            return found
        limit = asyncio.Semaphore(CONCURRENCY)

        async def answer(run_id: str) -> tuple[str, RunProgress | None]:
            async with limit:
                try:
                    return run_id, await self.progress(state, run_id, LIST_DEADLINE_S)
                except UNANSWERED:
                    return run_id, None

        tasks = [asyncio.create_task(answer(run_id)) for run_id in missing]
        done, pending = await asyncio.wait(tasks, timeout=LIST_DEADLINE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            run_id, progress = task.result()
            if progress is not None:
                found[run_id] = progress
        return found

    # Responses.

    def _render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        context.update(
            paths=Paths(request.scope.get("root_path", "")),
            asset_version=self.asset_version,
            states=[s.value for s in RunState],
            triggers=TRIGGER_LABELS,
        )
        return TEMPLATES.TemplateResponse(
            request, name, context, status_code=status_code, headers=SECURITY_HEADERS
        )

    def _html_error(self, request: Request, status: int, message: str, hint: str = "") -> Response:
        return self._render(
            request, "error.html", {"status": status, "message": message, "hint": hint}, status
        )

    async def runs_page(self, request: Request) -> Response:
        state = _state(request)
        try:
            filters = parse_filters(request.query_params)
        except FilterError as err:
            return self._html_error(request, 400, str(err))
        try:
            rows = await self._rows(state, filters)
        except TEMPORAL_ERRORS as err:
            return self._html_error(request, 503, TEMPORAL_DOWN.format(error=err))
        shown = {k: v for k, v in filters.items() if k in FILTERS}
        fragment = request.query_params.get("fragment") == "1"
        return self._render(
            request,
            "runs_table.html" if fragment else "runs.html",
            {
                "rows": rows,
                "filters": shown,
                "live": any(row.live for row in rows),
                "fragment_query": urlencode({**shown, "fragment": "1"}),
                "poll_ms": LIST_POLL_MS,
                "page_size": PAGE_SIZE,
            },
        )

    async def api_runs(self, request: Request) -> JSONResponse:
        state = _state(request)
        try:
            filters = parse_filters(request.query_params)
        except FilterError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        try:
            rows = await self._rows(state, filters)
        except TEMPORAL_ERRORS as err:
            return JSONResponse({"error": TEMPORAL_DOWN.format(error=err)}, 503)
        return JSONResponse({"runs": [row_json(row, self.links) for row in rows]})

    async def run_page(self, request: Request) -> Response:
        state = _state(request)
        run_id = request.path_params["run_id"]
        try:
            progress, notice = await self._load(state, run_id)
        except TEMPORAL_ERRORS as err:
            return self._html_error(request, 503, TEMPORAL_DOWN.format(error=err))
        if progress is None:
            return self._html_error(
                request, 404, UNKNOWN_RUN.format(run_id=run_id), UNKNOWN_RUN_HINT
            )
        view = await self._view(state, progress, notice)
        fragment = request.query_params.get("fragment") == "1"
        return self._render(
            request,
            "run_body.html" if fragment else "run.html",
            {"view": view, "run": view.run, "poll_ms": RUN_POLL_MS},
        )

    async def api_run(self, request: Request) -> JSONResponse:
        state = _state(request)
        run_id = request.path_params["run_id"]
        try:
            progress, notice = await self._load(state, run_id)
        except TEMPORAL_ERRORS as err:
            return JSONResponse({"error": TEMPORAL_DOWN.format(error=err)}, 503)
        if progress is None:
            return JSONResponse({"error": UNKNOWN_RUN.format(run_id=run_id)}, status_code=404)
        view = await self._view(state, progress, notice)
        return JSONResponse(view_json(view, self.links))

    async def stage_log(self, request: Request) -> Response:
        """The stage's full log as plain text; followed while the run says the stage is running."""
        state = _state(request)
        run_id, stage = request.path_params["run_id"], request.path_params["stage"]
        missing = PlainTextResponse(UNKNOWN_LOG.format(stage=stage, run_id=run_id), 404)
        live = await self._stage_live(state, run_id, stage)
        try:
            handle = await asyncio.to_thread(self._open_log, state.logs, run_id, stage, live)
        except LogNotFound:
            return missing
        log.info("serving log", extra={"run_id": run_id, "stage": stage, "follow": bool(live)})
        return StreamingResponse(
            self._follow(state, run_id, stage, handle, bool(live)),
            media_type="text/plain; charset=utf-8",
            headers={
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
                # Ask proxies (nginx) not to buffer a followed log.
                "X-Accel-Buffering": "no",
            },
        )

    @staticmethod
    def _open_log(logs: LogStore, run_id: str, stage: str, live: bool | None) -> LogHandle:
        """The log, opened once: it is read through this handle only, never by path again.

        A stage that is running but has not written yet gets a handle that opens the log when it
        appears (the same safe way); anything but a regular file of the store is refused."""
        try:
            return LogHandle(logs, run_id, stage, logs.open_read(run_id, stage))
        except LogNotFound as err:
            if not live or not err.absent:
                raise
            return LogHandle(logs, run_id, stage, None)

    async def _stage_live(self, state: BotState, run_id: str, stage: str) -> bool | None:
        """True while the stage runs, False once it cannot write more, None when nobody answers."""
        try:
            progress = await self.progress(state, run_id)
        except UNANSWERED:
            return None
        if progress is None or progress.state.finished:
            return False
        return any(s.name == stage and s.state is StageState.RUNNING for s in progress.stages)

    async def _follow(
        self, state: BotState, run_id: str, stage: str, handle: LogHandle, live: bool
    ) -> AsyncIterator[str]:
        try:
            async for text in self._follow_lines(state, run_id, stage, handle, live):
                yield text
        finally:
            handle.close()

    async def _follow_lines(
        self, state: BotState, run_id: str, stage: str, handle: LogHandle, live: bool
    ) -> AsyncIterator[str]:
        partial = b""
        checked = unanswered_since = time.monotonic()
        while True:
            chunk = await asyncio.to_thread(handle.read_chunk)
            if chunk:
                complete, _, partial = (partial + chunk).rpartition(b"\n")
                if complete:
                    # Whole lines only: "\n" never splits a UTF-8 sequence, an escape code or a
                    # secret (the masker masks multi-line ones line by line).
                    yield await asyncio.to_thread(self._clean, complete + b"\n")
                continue
            if not live or handle.refused:
                break
            now = time.monotonic()
            if now - checked >= FOLLOW_CHECK_S:
                checked = now
                answer = await self._stage_live(state, run_id, stage)
                if answer is None:
                    live = now - unanswered_since < FOLLOW_GIVE_UP_S
                else:
                    unanswered_since = now
                    live = answer
                # One more read after the stage ended picks up its last lines.
                continue
            await asyncio.sleep(FOLLOW_POLL_S)
        if partial:
            yield self._clean(partial)

    def _clean(self, data: bytes) -> str:
        """Log bytes as the route serves them: text without escape codes, secrets masked."""
        return self.masker.mask(strip_ansi(data.decode("utf-8", errors="replace")))


class LogHandle:
    """A stage log the route reads through one open file, opened from the store only."""

    def __init__(self, logs: LogStore, run_id: str, stage: str, file: BinaryIO | None) -> None:
        self._logs, self._run_id, self._stage, self._file = logs, run_id, stage, file
        self.refused = False
        """What appeared is not a regular file of the store: the stream ends."""

    def read_chunk(self) -> bytes:
        if self._file is None:
            try:
                self._file = self._logs.open_read(self._run_id, self._stage)
            except LogNotFound as err:
                if not err.absent:
                    self.refused = True
                return b""
        return self._file.read(LOG_CHUNK)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _state(request: Request) -> BotState:
    state: BotState = request.app.state.bot
    return state


async def pages_off(request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": PAGES_OFF}, status_code=404)
    return PlainTextResponse(PAGES_OFF, status_code=404)


def routes(settings: Settings) -> list[BaseRoute]:
    pages = RunPages(settings)
    paths = (
        ("/runs", pages.runs_page),
        ("/runs/{run_id}", pages.run_page),
        ("/runs/{run_id}/logs/{stage}", pages.stage_log),
        ("/api/runs", pages.api_runs),
        ("/api/runs/{run_id}", pages.api_run),
    )
    if not settings.run_pages:
        return [Route(path, pages_off) for path, _ in paths]
    return [
        *(Route(path, endpoint) for path, endpoint in paths),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
