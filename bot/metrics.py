"""Prometheus metrics of the bot, `GET /metrics`, and the per-request access log.

Front doors count what they handled with `record_webhook` / `record_slack`; runs and clusters are
read from Temporal at scrape time (no database of our own); worker metrics (stage durations,
reporting errors) share the default registry when the worker runs in the same process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from bot.pages.loading import UNANSWERED
from bot.state import BotState
from worker.contract import RunState, Trigger
from worker.coordinator import WarmCluster
from worker.runcontrol import RunControl, RunSummary, runs_query, summary_of

log = logging.getLogger(__name__)
access_log = logging.getLogger("bot.access")

GITHUB_EVENTS = frozenset({"push", "issue_comment", "pull_request", "ping"})
SLACK_EVENTS = frozenset({"command", "action", "view", "shortcut", "event", "options"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/static"})
"""Routes polled by machines: their access log lines go to DEBUG."""


class Outcome(str, Enum):
    """What a front door did with a webhook delivery or Slack request."""

    STARTED = "started"
    ACCEPTED = "accepted"
    """Handed to the worker (a command it answers, after checking who asked)."""
    DUPLICATE = "duplicate"
    """A redelivery or repeat: no second run."""
    CANCELLED = "cancelled"
    REPLIED = "replied"
    """Answered without starting anything (help, status, usage)."""
    IGNORED = "ignored"
    """Nothing to do (an unwatched event, a bot's own comment)."""
    REJECTED = "rejected"
    """Bad or missing signature, malformed or oversize body."""
    DENIED = "denied"
    """The requester may not start or cancel runs."""
    ERROR = "error"


WEBHOOKS = Counter(
    "skyrun_webhooks",
    "GitHub webhook deliveries, by event and outcome.",
    ["event", "outcome"],
)
SLACK_REQUESTS = Counter(
    "skyrun_slack_requests",
    "Slack requests (slash commands, interactivity), by event and outcome.",
    ["event", "outcome"],
)
HTTP_REQUESTS = Counter(
    "skyrun_http_requests",
    "HTTP requests served by the bot, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "skyrun_http_request_duration_seconds",
    "Time to answer an HTTP request (a streamed log counts until it ends), by route template.",
    ["route"],
)


def _outcome(outcome: Outcome | str) -> str:
    value = outcome.value if isinstance(outcome, Outcome) else outcome
    return value if value in {o.value for o in Outcome} else OTHER


def record_webhook(event: str, outcome: Outcome | str) -> None:
    """Count one GitHub delivery; unknown event names (the header is untrusted) count as other."""
    WEBHOOKS.labels(event if event in GITHUB_EVENTS else OTHER, _outcome(outcome)).inc()


def record_slack(event: str, outcome: Outcome | str) -> None:
    """Count one Slack request (event: command, action, view, shortcut, event or options)."""
    SLACK_REQUESTS.labels(event if event in SLACK_EVENTS else OTHER, _outcome(outcome)).inc()


# Runs and clusters, read from Temporal at scrape time.

REFRESH_EVERY_S = 15.0
"""Scrapes closer together than this reuse the last look, so scrapers cannot load Temporal."""
REFRESH_TIMEOUT_S = 10.0
COST_SLACK = timedelta(seconds=5)
"""Runs closed this long before the collector started still count (the app was starting)."""
QUERY_TIMEOUT_S = 3.0
CONCURRENCY = 8
MAX_LIVE_RUNS = 500
MAX_CLOSED_RUNS = 500
"""Runs closed since the last look whose cost one refresh reads (more wait for the next)."""


@dataclass
class _Snapshot:
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    clusters: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    warm: list[WarmCluster] = field(default_factory=list)


class RunsCollector(Collector):
    """Runs by trigger and state from Temporal's visibility; clusters up from live runs."""

    def __init__(self, *, ttl_s: float = REFRESH_EVERY_S) -> None:
        self.ttl_s = ttl_s
        self._snapshot: _Snapshot | None = None
        self._taken = -math.inf
        self._lock = asyncio.Lock()
        # Cost (issue 14): dollars of the runs that closed since this collector started.
        self._since = datetime.now(UTC) - COST_SLACK
        self._costed: set[str] = set()
        self.dollars: dict[tuple[str, str], float] = {}
        """Actual cost (USD) of finished runs by (repository, trigger), counted once each."""

    async def refresh(self, client: Client, control: RunControl, task_queue: str) -> None:
        async with self._lock:
            if time.monotonic() - self._taken < self.ttl_s:
                return
            try:
                snapshot: _Snapshot | None = await asyncio.wait_for(
                    self._take(client, control, task_queue), REFRESH_TIMEOUT_S
                )
            except UNANSWERED as err:
                log.warning("metrics: cannot read runs from Temporal: %s", err)
                snapshot = None
            self._snapshot, self._taken = snapshot, time.monotonic()

    async def _take(self, client: Client, control: RunControl, task_queue: str) -> _Snapshot:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def count(trigger: Trigger, state: RunState) -> tuple[tuple[str, str], int]:
            live_only = not state.finished
            query = runs_query(
                task_queue=task_queue,
                trigger=trigger.value,
                state=state.value,
                running_only=live_only,
            )
            async with limit:
                counted = await client.count_workflows(query)
            return (trigger.value, state.value), counted.count

        async def clusters(run_id: str) -> tuple[str, int] | None:
            async with limit:
                try:
                    progress = await asyncio.wait_for(control.progress(run_id), QUERY_TIMEOUT_S)
                except UNANSWERED:
                    return None
            if progress is None:
                return None
            return progress.backend or "unknown", len(progress.clusters_up)

        await self._count_dollars(client, control, task_queue, limit)
        counts = await asyncio.gather(*(count(t, s) for t in Trigger for s in RunState))
        live = runs_query(task_queue=task_queue, running_only=True)
        run_ids = [
            summary_of(execution).run_id
            async for execution in client.list_workflows(live, limit=MAX_LIVE_RUNS)
        ]
        snapshot = _Snapshot(runs=dict(counts))
        try:
            snapshot.warm = await asyncio.wait_for(control.warm_clusters(), QUERY_TIMEOUT_S * 2)
        except UNANSWERED as err:
            log.warning("metrics: cannot list warm clusters: %s", err)
        for answer in await asyncio.gather(*(clusters(run_id) for run_id in run_ids)):
            if answer is None:
                snapshot.unanswered += 1
                continue
            backend, up = answer
            snapshot.clusters[backend] = snapshot.clusters.get(backend, 0) + up
        return snapshot

    async def _count_dollars(
        self, client: Client, control: RunControl, task_queue: str, limit: asyncio.Semaphore
    ) -> None:
        """Add the final cost of each run that closed since the collector started, once."""
        since = self._since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = (
            f"{runs_query(task_queue=task_queue)} AND ExecutionStatus != 'Running' "
            f"AND CloseTime >= '{since}'"
        )
        closed = [
            summary_of(execution)
            async for execution in client.list_workflows(query, limit=MAX_CLOSED_RUNS)
        ]

        async def cost(summary: RunSummary) -> None:
            async with limit:
                try:
                    progress = await asyncio.wait_for(
                        control.progress(summary.run_id), QUERY_TIMEOUT_S
                    )
                except UNANSWERED:
                    return  # asked again at the next refresh
            if summary.run_id in self._costed:
                return
            self._costed.add(summary.run_id)
            if progress is not None and progress.cost_usd:
                key = (summary.repo, summary.trigger or OTHER)
                self.dollars[key] = self.dollars.get(key, 0.0) + progress.cost_usd

        await asyncio.gather(*(cost(s) for s in closed if s.run_id not in self._costed))

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        snapshot = self._snapshot
        up = GaugeMetricFamily(
            "skyrun_temporal_up", "1 when the last look at Temporal for run metrics succeeded."
        )
        up.add_metric([], 1 if snapshot else 0)
        yield up
        if snapshot is None:
            return
        runs = GaugeMetricFamily(
            "skyrun_runs",
            "Runs of this deployment known to Temporal (within the namespace's retention), by "
            "trigger and state: started = sum by trigger; finished = state not queued/running.",
            labels=["trigger", "state"],
        )
        for (trigger, state), value in sorted(snapshot.runs.items()):
            runs.add_metric([trigger, state], value)
        yield runs
        clusters = GaugeMetricFamily(
            "skyrun_clusters_up",
            "Clusters that live runs have launched and not yet torn down, by backend.",
            labels=["backend"],
        )
        for backend, value in sorted(snapshot.clusters.items()):
            clusters.add_metric([backend], value)
        yield clusters
        warm = GaugeMetricFamily(
            "skyrun_warm_clusters",
            "Clusters held warm for their lane's next run (keep_warm_minutes), by lane.",
            labels=["lane"],
        )
        lanes: dict[str, int] = {}
        for cluster in snapshot.warm:
            lanes[cluster.lane] = lanes.get(cluster.lane, 0) + 1
        for lane, value in sorted(lanes.items()):
            warm.add_metric([lane], value)
        yield warm
        expiry = GaugeMetricFamily(
            "skyrun_warm_cluster_expiry_timestamp_seconds",
            "When each warm cluster is torn down unless a run of its lane takes it (Unix time).",
            labels=["cluster", "lane", "run_id"],
        )
        for cluster in snapshot.warm:
            until = datetime.fromisoformat(cluster.until).timestamp()
            expiry.add_metric([cluster.name, cluster.lane, cluster.run_id], until)
        yield expiry
        unanswered = GaugeMetricFamily(
            "skyrun_live_runs_unanswered",
            "Live runs whose progress query got no answer (is their worker running?).",
        )
        unanswered.add_metric([], snapshot.unanswered)
        yield unanswered
        dollars = CounterMetricFamily(
            "skyrun_cost_usd",
            "Actual cost in USD (clusters' hourly price x time up) of the runs that finished "
            "since this bot started, by repository and trigger.",
            labels=["repo", "trigger"],
        )
        for (repo, trigger), usd in sorted(self.dollars.items()):
            dollars.add_metric([repo, trigger], round(usd, 6))
        yield dollars


class MetricsEndpoint:
    """`GET /metrics`: the process's default registry plus this app's run collector."""

    def __init__(self, *, ttl_s: float = REFRESH_EVERY_S) -> None:
        self.runs = RunsCollector(ttl_s=ttl_s)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.runs)

    async def metrics(self, request: Request) -> Response:
        state: BotState = request.app.state.bot
        await self.runs.refresh(state.client, state.control, state.settings.temporal_task_queue)
        body = generate_latest(REGISTRY) + generate_latest(self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[BaseRoute]:
    return [Route("/metrics", MetricsEndpoint().metrics)]


# Requests: counted and logged (with run id and delivery id) by one ASGI middleware.


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")[:64]
            return text
    return ""


class RequestMetrics:
    """Count and time every HTTP request by route template, and log it with what identifies it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            method = scope["method"] if scope["method"] in HTTP_METHODS else OTHER
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_DURATION.labels(route).observe(elapsed)
            self._log(scope, route, status, elapsed)

    @staticmethod
    def _log(scope: Scope, route: str, status: int, elapsed: float) -> None:
        extra: dict[str, object] = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 1),
        }
        for key, value in _identifiers(scope):
            extra[key] = value
        level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
        access_log.log(level, "%s %s %s", scope["method"], scope["path"], status, extra=extra)


def _identifiers(scope: Scope) -> Iterator[tuple[str, str]]:
    params = scope.get("path_params") or {}
    if run_id := params.get("run_id"):
        yield "run_id", str(run_id)[:128]
    if delivery := _header(scope, b"x-github-delivery"):
        yield "delivery", delivery
