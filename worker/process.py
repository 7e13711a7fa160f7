"""The worker process (`skyrun worker`): the workflows, their activities and the configured compute
backend, composed and run until a signal stops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from worker.activities import PipelineActivities
from worker.backends.base import ComputeBackend
from worker.coordinator import CoordinatorActivities, CoordinatorWorkflow
from worker.github.service import GitHubServices, make_github
from worker.github.workflow import GitHubCommandWorkflow, GitHubDeliveryWorkflow
from worker.ledger import LedgerActivities, LedgerWorkflow
from worker.reporting import ReportingActivities, make_reporting
from worker.settings import Backend, Settings
from worker.sweep import SweepWorkflow
from worker.sweepreport import SweepReporting
from worker.temporal import connect, ensure_search_attributes
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
        acts.provision_stage,
        acts.down_clusters,
        acts.cleanup_run,
        acts.wait_for_lane,
        acts.evaluate_gates,
        acts.resolve_default_branch,
    ]
    reports = reporting or make_reporting(settings, gh)
    coordination = CoordinatorActivities(client)
    methods += [reports.report_progress, reports.authorize_run, *gh.activities()]
    methods += [coordination.enter, coordination.closed_runs]
    methods.append(LedgerActivities(client).record_cost)
    methods.append(SweepReporting(settings, client, gh).report)
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
                SweepWorkflow,
                LedgerWorkflow,
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


def stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM, so shutdown runs our cleanup instead of unwinding."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


WORKER_STOPPING = "worker stopping: running activities get {seconds} s to finish, then cancel"
WORKER_DIED = "Temporal worker on {queues} stopped by itself; exiting so the supervisor restarts us"
WATCH_EVERY_S = 1.0


async def run_worker(settings: Settings) -> int:
    """`skyrun worker` until SIGTERM/SIGINT (graceful) or a Temporal worker dies (exit 1).

    On a signal the worker stops polling, gives running activities `graceful_shutdown_timeout`
    to finish, then cancels them: the backend stops the job, the activity reports the failure
    and the workflow retries the stage (for the local backend, on a worker of the same host and
    SKYRUN_DATA_DIR). Supervisors must allow that much time before killing us (deploy/).
    """
    from worker.probes import serving_probes, stopped_queues

    stop = stop_event()
    client = await connect(settings)
    await ensure_search_attributes(client)
    if settings.backend is Backend.LOCAL:
        await _reap(client, settings)
    workers = build_workers(client, settings)
    probes = (
        serving_probes(client, workers, settings.worker_metrics_port)
        if settings.worker_metrics_port
        else contextlib.nullcontext()
    )
    code = 0
    log.info("worker polling %s", ", ".join(w.task_queue for w in workers))
    async with probes, running_workers(workers):
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_EVERY_S)
            stopped = stopped_queues(workers)
            if stopped and not stop.is_set():
                log.error(WORKER_DIED.format(queues=", ".join(stopped)))
                code = 1
                break
        grace = workers[0].config().get("graceful_shutdown_timeout")
        seconds = int(grace.total_seconds()) if grace else 0
        log.info(WORKER_STOPPING.format(seconds=seconds))
    return code


async def _reap(client: Client, settings: Settings) -> None:
    """Remove local clusters of runs that closed while this worker was away (never fatal)."""
    from worker.reaper import reap
    from worker.runcontrol import RunControl

    try:
        # A cluster its lane holds warm outlives its run on purpose.
        warm = await RunControl(client, settings.temporal_task_queue).warm_clusters()
        removed = await reap(
            client,
            settings.data_path,
            logs_dir=settings.logs_dir,
            worker=settings.worker_queue,
            bucket_idle_days=settings.local_bucket_idle_days,
            warm=[cluster.name for cluster in warm],
        )
    except Exception:
        log.exception("could not look for clusters left by runs that are over")
        return
    for what in removed:
        log.info("removed %s: its run is over", what)
