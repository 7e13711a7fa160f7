"""`skyrun dev`: the whole stack on one machine (embedded Temporal, a worker and the bot), the one
place that composes bot, worker and Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from temporalio.client import Client

from worker.settings import Settings
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


async def run_dev(settings: Settings, example: str | None = None) -> int:
    from bot.server import uvicorn_config
    from worker.probes import HostedServer
    from worker.process import build_workers, running_workers, stop_event

    stop = stop_event()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    async with (
        temporal_client(settings) as client,
        running_workers(build_workers(client, settings)),
    ):
        server = HostedServer(uvicorn_config(settings, client))
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
    from bot.console import follow, print_summary
    from worker.manual import manual_request
    from worker.runcontrol import RunControl

    control = RunControl(client, settings.temporal_task_queue)
    request = await manual_request(repo, "", [], {})
    outcome = await control.start(request)
    print(f"\nexample run {outcome.run_id} started: {settings.public_url}/runs/{outcome.run_id}")
    progress = await follow(control, outcome.run_id)
    print_summary(progress, settings)
    print("\nThe stack keeps running: open the links above, or Ctrl-C to stop.", flush=True)
