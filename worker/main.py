"""Compose a skyrun worker: the workflow, its activities and the configured compute backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from worker.activities import PipelineActivities
from worker.backends.base import ComputeBackend
from worker.coordinator import CoordinatorActivities, CoordinatorWorkflow
from worker.github.service import GitHubServices, make_github
from worker.github.workflow import GitHubCommandWorkflow, GitHubDeliveryWorkflow
from worker.reporting import ReportingActivities, make_reporting
from worker.settings import Backend, Settings
from worker.workflow import PipelineWorkflow

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> ComputeBackend:
    if settings.backend is Backend.SKYPILOT:
        from worker.backends.skypilot import SkyPilotBackend

        return SkyPilotBackend(api_server_endpoint=settings.skypilot_api_server_endpoint)
    from worker.backends.local import LocalBackend

    return LocalBackend.from_settings(settings)


def pins_runs(settings: Settings) -> bool:
    """Whether all activities of a run must stay on the worker that checked it out.

    Local clusters live on one machine; SkyPilot without an API server keeps its state in
    this worker's home. Only SkyPilot behind an API server lets any worker run any activity.
    """
    return not (settings.backend is Backend.SKYPILOT and settings.skypilot_api_server_endpoint)


def build_workers(
    client: Client,
    settings: Settings,
    *,
    backend: ComputeBackend | None = None,
    activities: PipelineActivities | None = None,
    reporting: ReportingActivities | None = None,
    github: GitHubServices | None = None,
) -> Sequence[Worker]:
    """One worker on the shared queue (workflows, first activities) and one on this worker's own."""
    gh = github or make_github(settings, client)
    acts = activities or PipelineActivities(
        settings,
        backend or make_backend(settings),
        client,
        token_provider=gh.token_for_request,
        masker=gh.auth.masker,  # one masker: it learns the installation tokens auth mints
    )
    acts.pinned_queue = settings.worker_queue if pins_runs(settings) else ""
    methods = [
        acts.prepare_run,
        acts.run_stage,
        acts.down_clusters,
        acts.cleanup_run,
        acts.wait_for_lane,
    ]
    reports = reporting or make_reporting(settings, gh)
    coordination = CoordinatorActivities(client)
    methods += [reports.report_progress, reports.authorize_run, *gh.activities()]
    methods += [coordination.enter, coordination.closed_runs]
    common = dict(
        activities=methods,
        graceful_shutdown_timeout=timedelta(seconds=30),
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
    )
    workers = [
        Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=[
                PipelineWorkflow,
                CoordinatorWorkflow,
                GitHubCommandWorkflow,
                GitHubDeliveryWorkflow,
            ],
            **common,  # type: ignore[arg-type]
        )
    ]
    if acts.pinned_queue:
        workers.append(Worker(client, task_queue=acts.pinned_queue, **common))  # type: ignore[arg-type]
    return workers


@contextlib.asynccontextmanager
async def running_workers(workers: Sequence[Worker]) -> AsyncIterator[None]:
    """Run workers in the background; on exit shut them down gracefully."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
