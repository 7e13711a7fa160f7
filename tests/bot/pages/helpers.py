"""What the pages' tests share: pipelines, the bot stack in-process and served over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from temporalio.client import Client

from bot.app import create_app
from tests.runs import request_for
from worker.contract import RunProgress, RunRequest, RunState, StageProgress, StageState, Trigger
from worker.probes import HostedServer
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

# A pipeline whose `train` stage runs until the test opens its gate (creates a file).
GATED_PIPELINE = """\
stages:
  - {name: prep, task: prep.yaml}
  - {name: train, task: train.yaml, cluster: gpu}
"""
PREP_TASK = """\
run: |
  printf '\\033[32mready\\033[0m\\n'
  echo '::metric samples=10'
"""
TRAIN_TASK = """\
run: |
  echo waiting for the gate
  printf '\\033[1;34mepoch 1\\033[0m\\n'
  while [ ! -e {gate} ]; do sleep 0.05; done
  echo gate open
  echo '::metric accuracy=0.75'
  echo '::report'
  echo '| split | accuracy |'
  echo '| --- | ---: |'
  echo '| test | 75% |'
  echo '<script>alert(1)</script>'
  echo '::endreport'
"""
FAILING_PIPELINE = {
    "a.yaml": "run: echo preparing\n",
    "b.yaml": "run: |\n  echo about to fail\n  echo 'Traceback: boom' >&2\n  exit 3\n",
    "c.yaml": "run: echo never\n",
    ".skyrun.yaml": (
        "stages:\n  - {name: a, task: a.yaml}\n  - {name: b, task: b.yaml, cluster: shared}\n"
        "  - {name: c, task: c.yaml, cluster: shared}\n"
    ),
}
GITHUB_REPO = "acme/mock-training"
ANSI = "\x1b"


@dataclass
class Stack:
    settings: Settings
    control: RunControl
    http: httpx.AsyncClient
    app: Starlette


@contextlib.asynccontextmanager
async def bot_stack(client: Client, settings: Settings) -> AsyncIterator[Stack]:
    """Workers on the test's queue and the bot app, called in-process through ASGI."""
    async with (
        running_workers(build_workers(client, settings)),
        bot_only(client, settings) as stack,
    ):
        yield stack


@contextlib.asynccontextmanager
async def bot_only(client: Client, settings: Settings) -> AsyncIterator[Stack]:
    """The bot app alone (no worker answers its queries), called in-process through ASGI."""
    app = create_app(settings, client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://skyrun.test"
        ) as http,
    ):
        yield Stack(settings, RunControl(client, settings.temporal_task_queue), http, app)


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """Serve the app with uvicorn on a free local port (streaming and browsers need real HTTP)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = HostedServer(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise AssertionError("uvicorn did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def gated_files(gate: Path) -> dict[str, str]:
    return {
        ".skyrun.yaml": GATED_PIPELINE,
        "prep.yaml": PREP_TASK,
        "train.yaml": TRAIN_TASK.format(gate=gate),
    }


def github_request(path: Path, **fields: object) -> RunRequest:
    """A push-triggered run of a local repository that the pages show as a GitHub one."""
    request = request_for(path, trigger=Trigger.PUSH, requested_by="alice", **fields)
    request.repo = GITHUB_REPO
    return request


async def wait_for(predicate: Callable[[], object], timeout: float = 30) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def get_within(http: httpx.AsyncClient, path: str, seconds: float = 10) -> httpx.Response:
    """GET that must answer quickly: a planted FIFO must never make the route wait."""
    return await asyncio.wait_for(http.get(path), seconds)


def diamond_progress(state: RunState = RunState.SUCCEEDED) -> RunProgress:
    """A finished diamond run (prep → left ∥ right → join) with known times, for the timeline:
    the run spans 0 to 100 s; left runs 10 to 60 s and right 10 to 35 s, at the same time."""

    def at(seconds: int) -> str:
        return f"2026-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}+00:00"

    def stage(name: str, needs: list[str], start: int, end: int) -> StageProgress:
        return StageProgress(
            name,
            name,
            StageState.SUCCEEDED,
            at(start),
            at(end),
            end - start,
            0,
            launched=True,
            needs=needs,
        )

    return RunProgress(
        run_id="diamond-1",
        repo=GITHUB_REPO,
        ref="main",
        commit="c" * 40,
        trigger=Trigger.CLI,
        requested_by="tester",
        state=state,
        started_at=at(0),
        finished_at=at(100),
        stages=[
            stage("prep", [], 0, 10),
            stage("left", ["prep"], 10, 60),
            stage("right", ["prep"], 10, 35),
            stage("join", ["left", "right"], 60, 100),
        ],
    )
