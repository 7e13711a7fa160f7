"""`skyrun dev` (the whole stack in one process tree) and `skyrun worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from temporalio.client import Client

from worker.settings import Backend, Settings
from worker.temporal import connect, ensure_search_attributes

log = logging.getLogger(__name__)

BANNER = """\
skyrun is up ({backend} backend)
  bot & run pages  {public}/runs
  webhook          {public}/github/webhook
  Temporal         {temporal}
  Temporal UI      {ui}
  data             {data}
Press Ctrl-C to stop."""


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM, so shutdown runs our cleanup instead of unwinding."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.asynccontextmanager
async def temporal_client(settings: Settings) -> AsyncIterator[Client]:
    """The configured server, or the embedded dev server when TEMPORAL_ADDRESS is not set."""
    if settings.temporal_address:
        client = await connect(settings)
        await ensure_search_attributes(client)
        yield client
        return
    from worker.devserver import dev_server

    async with dev_server(settings) as client:
        await ensure_search_attributes(client)
        yield client


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
    from worker.main import build_workers, running_workers
    from worker.probes import serving_probes, stopped_queues

    stop = _stop_event()
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

    try:
        removed = await reap(
            client,
            settings.data_path,
            logs_dir=settings.logs_dir,
            worker=settings.worker_queue,
            bucket_idle_days=settings.local_bucket_idle_days,
        )
    except Exception:
        log.exception("could not look for clusters left by runs that are over")
        return
    for what in removed:
        log.info("removed %s: its run is over", what)


async def run_dev(settings: Settings, example: str | None = None) -> int:
    from bot.server import EmbeddedServer, uvicorn_config
    from worker.main import build_workers, running_workers

    stop = _stop_event()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    async with (
        temporal_client(settings) as client,
        running_workers(build_workers(client, settings)),
    ):
        server = EmbeddedServer(uvicorn_config(settings, client))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if serving.done():
            return 1
        print(
            BANNER.format(
                backend=settings.backend.value,
                public=settings.public_url,
                temporal=settings.temporal_target,
                ui=settings.temporal_ui_url,
                data=settings.data_path,
            ),
            flush=True,
        )
        example_task = (
            asyncio.create_task(_run_example(settings, client, example)) if example else None
        )
        await stop.wait()
        print("\nstopping skyrun…", flush=True)
        if example_task:
            example_task.cancel()
        server.should_exit = True
        await serving
    return 0


async def _run_example(settings: Settings, client: Client, repo: str) -> None:
    from bot.cli import follow, print_summary
    from worker.manual import manual_request
    from worker.runcontrol import RunControl

    control = RunControl(client, settings.temporal_task_queue)
    request = await manual_request(repo, "", [], {})
    outcome = await control.start(request)
    print(f"\nexample run {outcome.run_id} started: {settings.public_url}/runs/{outcome.run_id}")
    progress = await follow(control, outcome.run_id)
    print_summary(progress, settings)
    print("\nThe stack keeps running: open the links above, or Ctrl-C to stop.", flush=True)
