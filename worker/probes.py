"""A standalone worker's HTTP endpoint: `/healthz`, `/readyz` and `/metrics` for orchestrators.

`skyrun worker` serves it on `SKYRUN_WORKER_METRICS_PORT` (when set) from its own event loop, so a
probe that answers also proves the loop that runs activities and heartbeats is not stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Sequence
from datetime import timedelta

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.worker import Worker

NO_ANSWER = "no answer within 3 s"


def stopped_queues(workers: Sequence[Worker]) -> list[str]:
    """Task queues whose Temporal worker has stopped (a fatal error, or shutdown)."""
    return [worker.task_queue for worker in workers if worker.is_shutdown]


async def temporal_readiness(client: Client) -> JSONResponse:
    """`/readyz` of the bot and the worker: whether Temporal answers, within 3 s."""
    try:
        # check_health's own timeout does not cover reconnecting to a server that hangs.
        ok = await asyncio.wait_for(
            client.service_client.check_health(timeout=timedelta(seconds=2)), 3
        )
    except TimeoutError:
        return JSONResponse({"ready": False, "temporal": NO_ANSWER}, status_code=503)
    except Exception as err:  # any transport failure means "not ready", with the reason
        return JSONResponse({"ready": False, "temporal": str(err)}, status_code=503)
    status = 200 if ok else 503
    return JSONResponse({"ready": ok, "temporal": "ok" if ok else "unhealthy"}, status)


def probe_app(client: Client, workers: Sequence[Worker]) -> Starlette:
    async def healthz(request: Request) -> Response:
        stopped = stopped_queues(workers)
        if stopped:
            return JSONResponse({"healthy": False, "stopped": stopped}, status_code=503)
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        stopped = stopped_queues(workers)
        if stopped:
            return JSONResponse({"ready": False, "stopped": stopped}, status_code=503)
        return await temporal_readiness(client)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


class HostedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to its host process (the worker, which stops
    its activities first; `skyrun dev`, which stops everything in order)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving_probes(
    client: Client, workers: Sequence[Worker], port: int, host: str = "0.0.0.0"
) -> AsyncIterator[None]:
    """Serve the endpoint while the block runs."""
    config = uvicorn.Config(
        probe_app(client, workers),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = HostedServer(config)
    task = asyncio.create_task(server.serve())
    try:
        yield
    finally:
        server.should_exit = True
        await task
