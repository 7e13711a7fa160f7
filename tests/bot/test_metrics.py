"""Prometheus metrics: front-door counters, requests, runs and clusters read from Temporal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from bot.app import create_app
from bot.metrics import Outcome, RunsCollector, record_slack, record_webhook
from tests.bot.pages.helpers import Stack, bot_stack, gated_files
from tests.runs import request_for, wait_finished, wait_stage_running
from worker.contract import RunState, Trigger
from worker.settings import Settings


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a /metrics body, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def collected(collector: RunsCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


@pytest.fixture
async def stack(client: Client, settings: Settings) -> AsyncIterator[Stack]:
    async with bot_stack(client, settings) as running:
        yield running


def test_webhook_and_slack_counters_move_and_keep_their_labels_bounded() -> None:
    started = sample("skyrun_webhooks_total", event="push", outcome="started")
    record_webhook("push", Outcome.STARTED)
    assert sample("skyrun_webhooks_total", event="push", outcome="started") == started + 1

    other = sample("skyrun_webhooks_total", event="other", outcome="other")
    record_webhook("x" * 300, "made-up")  # an unsigned request's header is no label value
    assert sample("skyrun_webhooks_total", event="other", outcome="other") == other + 1

    denied = sample("skyrun_slack_requests_total", event="command", outcome="denied")
    record_slack("command", "denied")
    assert sample("skyrun_slack_requests_total", event="command", outcome="denied") == denied + 1


async def test_requests_are_counted_by_route_and_logged_with_the_run_id(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    health = {"route": "/healthz", "method": "GET", "status": "200"}
    unknown_run = {"route": "/runs/{run_id}", "method": "GET", "status": "404"}
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    before = {
        key: sample("skyrun_http_requests_total", **labels)
        for key, labels in (("health", health), ("run", unknown_run), ("none", unmatched))
    }
    timed = sample("skyrun_http_request_duration_seconds_count", route="/healthz")
    with caplog.at_level(logging.INFO, logger="bot.access"):
        assert (await stack.http.get("/healthz")).status_code == 200
        assert (await stack.http.get("/runs/not-a-run")).status_code == 404
        unmatched_response = await stack.http.get(
            "/no/such/page", headers={"X-GitHub-Delivery": "d-42"}
        )
        assert unmatched_response.status_code == 404
    assert sample("skyrun_http_requests_total", **health) == before["health"] + 1
    assert sample("skyrun_http_requests_total", **unknown_run) == before["run"] + 1
    assert sample("skyrun_http_requests_total", **unmatched) == before["none"] + 1
    assert sample("skyrun_http_request_duration_seconds_count", route="/healthz") == timed + 1

    logged = [r for r in caplog.records if r.name == "bot.access"]
    page = next(r for r in logged if r.getMessage() == "GET /runs/not-a-run 404")
    assert page.__dict__["run_id"] == "not-a-run" and page.levelno == logging.INFO
    assert page.__dict__["route"] == "/runs/{run_id}"
    stray = next(r for r in logged if r.getMessage() == "GET /no/such/page 404")
    assert stray.__dict__["delivery"] == "d-42" and "run_id" not in stray.__dict__
    assert not any(r.getMessage().startswith("GET /healthz") for r in logged)  # polled: DEBUG


async def test_metrics_count_runs_and_clusters_of_this_deployment(
    gate: Path, stack: Stack, client: Client, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    record_webhook("ping", Outcome.REPLIED)
    outcome = await stack.control.start(request_for(git_repo(gated_files(gate))))
    queue = stack.settings.temporal_task_queue
    try:
        await wait_stage_running(stack.control, outcome.run_id, "train")
        response = await stack.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        live = scraped(response.text)
        assert live[("skyrun_temporal_up", ())] == 1
        assert live[("skyrun_clusters_up", (("backend", "local"),))] == 1
        assert live[("skyrun_runs", (("state", "running"), ("trigger", "cli")))] == 1
        assert live[("skyrun_runs", (("state", "succeeded"), ("trigger", "cli")))] == 0
        assert live[("skyrun_live_runs_unanswered", ())] == 0
        assert live[("skyrun_webhooks_total", (("event", "ping"), ("outcome", "replied")))] >= 1
    finally:
        gate.touch()
    assert (await wait_finished(stack.control, outcome.run_id)).state is RunState.SUCCEEDED

    collector = RunsCollector(ttl_s=0)

    async def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        await collector.refresh(client, stack.control, queue)
        return collected(collector)

    finished: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    async def poll() -> None:
        nonlocal finished
        while True:
            finished = await settled()
            if finished.get(("skyrun_runs", (("state", "succeeded"), ("trigger", "cli")))) == 1:
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), 30)
    assert finished[("skyrun_runs", (("state", "running"), ("trigger", "cli")))] == 0
    assert not any(name == "skyrun_clusters_up" and value for (name, _), value in finished.items())

    # Another deployment's queue sees none of this one's runs.
    await collector.refresh(client, stack.control, f"{queue}-elsewhere")
    assert not any(v for (n, _), v in collected(collector).items() if n == "skyrun_runs")


async def test_metrics_show_each_warm_cluster_and_when_it_goes(
    stack: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    files = {
        "t.yaml": "run: echo done\n",
        ".skyrun.yaml": "keep_warm_minutes: 3\nstages: [{name: t, task: t.yaml}]\n",
    }
    request = request_for(git_repo(files))
    outcome = await stack.control.start(request)
    assert (await wait_finished(stack.control, outcome.run_id)).state is RunState.SUCCEEDED
    collector = RunsCollector(ttl_s=0)
    await collector.refresh(client, stack.control, stack.settings.temporal_task_queue)
    found = collected(collector)
    assert found[("skyrun_warm_clusters", (("lane", request.lane),))] == 1
    (expiry,) = [v for (n, _), v in found.items() if n.startswith("skyrun_warm_cluster_expiry")]
    assert 120 < expiry - time.time() <= 180


async def test_metrics_still_answer_when_temporal_does_not(settings: Settings) -> None:
    app = create_app(settings, await Client.connect("127.0.0.1:1", lazy=True))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://skyrun.test") as http,
    ):
        response = await http.get("/metrics")
    assert response.status_code == 200
    samples = scraped(response.text)
    assert samples[("skyrun_temporal_up", ())] == 0
    assert not any(name == "skyrun_runs" for name, _ in samples)


# Cost (issue 14): dollars by repository and trigger.


async def test_metrics_count_the_dollars_of_finished_runs_once_by_repository_and_trigger(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    settings = make_settings(SKYRUN_CPU_HOUR_USD="3600")  # a dollar a second per CPU
    files = {
        ".skyrun.yaml": "stages:\n  - {name: a, task: a.yaml}\n",
        "a.yaml": "resources: {cpus: 2}\nrun: sleep 0.5\n",
    }
    collector = RunsCollector(ttl_s=0)
    queue = settings.temporal_task_queue
    async with bot_stack(client, settings) as stack:
        repo = git_repo(files)
        first = await stack.control.start(request_for(repo))
        second = await stack.control.start(request_for(repo, trigger=Trigger.PUSH, lane="b"))
        costs = [
            (await wait_finished(stack.control, run.run_id)).cost_usd for run in (first, second)
        ]
        assert all(cost is not None and cost >= 2 * 0.5 for cost in costs), costs
        wanted = {
            ("skyrun_cost_usd_total", (("repo", str(repo)), ("trigger", trigger))): cost
            for trigger, cost in zip(("cli", "push"), costs, strict=True)
        }

        def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return {key: collected(collector).get(key, 0.0) for key in wanted}

        async def poll() -> None:
            while True:
                await collector.refresh(client, stack.control, queue)
                if all(counted()[key] >= (cost or 0) - 1e-5 for key, cost in wanted.items()):
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(poll(), 30)
        assert counted() == {key: pytest.approx(cost, abs=1e-5) for key, cost in wanted.items()}
        # A later look counts nothing twice.
        await collector.refresh(client, stack.control, queue)
        assert counted() == {key: pytest.approx(cost, abs=1e-5) for key, cost in wanted.items()}
        response = await stack.http.get("/metrics")
        assert "skyrun_cost_usd_total" in response.text
