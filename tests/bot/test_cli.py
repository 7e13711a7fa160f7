"""The `skyrun` command line end to end, and a worker killed in the middle of a run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from bot.cli import NO_CLUSTERS
from bot.console import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tests.runs import (
    alive,
    clusters_left,
    hand_over,
    handed_cluster,
    request_for,
    wait_finished,
    wait_pidfile,
    wait_stage_running,
)
from worker.backends.base import cluster_name_for
from worker.contract import RunState, StageState
from worker.formatting import format_time
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

SKYRUN = [sys.executable, "-m", "bot.cli"]


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_target,
        "TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "SKYRUN_DATA_DIR": str(settings.data_path),
        "SKYRUN_PUBLIC_URL": settings.public_url,
        "SKYRUN_LOCAL_SANDBOX": "on" if settings.local_sandbox else "off",
    }


async def skyrun(settings: Settings, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *SKYRUN,
        *args,
        env=cli_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with running_workers(build_workers(client, settings)):
        yield


@pytest.mark.usefixtures("worker")
async def test_run_wait_exits_zero_and_prints_metrics_and_links(
    settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "t.yaml": "run: echo '::metric accuracy=0.91'\n",
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    code, out, err = await skyrun(settings, "run", str(repo), "--wait", "--env", "A=1")
    assert code == EXIT_OK, out + err
    assert "succeeded" in out
    assert "metric accuracy = 0.91" in out
    assert "http://skyrun.test/runs/" in out
    run_id = out.split()[1]

    code, out, _ = await skyrun(settings, "status", run_id)
    assert code == EXIT_OK and "succeeded" in out
    code, out, _ = await skyrun(settings, "runs")
    assert code == EXIT_OK and run_id in out


@pytest.mark.usefixtures("worker")
async def test_run_wait_exits_non_zero_when_a_stage_fails(
    settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "t.yaml": "run: |\n  echo 'CUDA out of memory'\n  exit 1\n",
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    code, out, _ = await skyrun(settings, "run", str(repo), "--wait")
    assert code == EXIT_FAILED
    assert "stage 't' failed with exit status 1" in out
    assert "CUDA out of memory" in out


@pytest.mark.usefixtures("worker")
@pytest.mark.host_processes
async def test_cancel_from_the_command_line(
    settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    repo = git_repo(
        {
            "t.yaml": f"run: |\n  echo $$ > {pidfile}\n  sleep 300\n",
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        *SKYRUN,
        "run",
        str(repo),
        "--wait",
        env=cli_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first_line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    run_id = first_line.split()[1]
    await wait_pidfile(pidfile)
    code, out, _ = await skyrun(settings, "cancel", run_id)
    assert code == EXIT_OK and "cancelling" in out
    assert await asyncio.wait_for(proc.wait(), 60) == EXIT_CANCELLED
    code, _, _ = await skyrun(settings, "cancel", run_id)
    assert code == EXIT_FAILED  # not running any more


async def test_usage_errors_and_unreachable_temporal_are_clear(
    settings: Settings, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    code, _, err = await skyrun(settings, "run", str(tmp_path / "nope"))
    assert code == 2 and "neither a git URL nor an existing directory" in err
    code, _, err = await skyrun(settings, "run", str(tmp_path), "--env", "not-an-assignment")
    assert code == 2 and "KEY=VALUE" in err
    offline = make_settings(TEMPORAL_ADDRESS="127.0.0.1:1")
    code, _, err = await skyrun(offline, "runs")
    assert code == EXIT_FAILED and "cannot reach Temporal" in err and "skyrun dev" in err
    code, _, err = await skyrun(settings, "status", "no-such-run")
    assert code == EXIT_FAILED and "no run with id no-such-run" in err


@pytest.mark.host_processes
async def test_killed_worker_restarted_finishes_the_run_and_leaves_no_orphan(
    client: Client, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    task = (
        "run: |\n"
        f"  if [ -e {pidfile} ]; then echo second attempt; exit 0; fi\n"
        f"  echo $$ > {pidfile}\n"
        "  sleep 300\n"
    )
    repo = git_repo({"t.yaml": task, ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n"})
    control = RunControl(client, settings.temporal_task_queue)

    async def start_worker() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *SKYRUN,
            "worker",
            env=cli_env(settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    first = await start_worker()
    outcome = await control.start(request_for(repo))
    job = await wait_pidfile(pidfile)
    first.send_signal(signal.SIGKILL)
    await first.wait()

    second = await start_worker()
    try:
        progress = await wait_finished(control, outcome.run_id, timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 60)
    assert progress.state is RunState.SUCCEEDED
    assert progress.stages[0].state is StageState.SUCCEEDED
    log = (settings.logs_dir / outcome.run_id / "t.log").read_text()
    assert "(attempt 2)" in log and "second attempt" in log
    assert not alive(job)


# Retry from the failed stage: `skyrun retry RUN [--wait]`.

FLAKY_EVAL = {
    "prep.yaml": "run: |\n  echo x >> $DATA_BUCKET_URL/prep.count\n  echo '::metric rows=3'\n",
    "eval.yaml": (
        "run: |\n"
        "  [ -f $DATA_BUCKET_URL/eval.tried ] || { touch $DATA_BUCKET_URL/eval.tried; exit 4; }\n"
        "  echo '::metric accuracy=0.9'\n"
    ),
    ".skyrun.yaml": (
        "stages:\n  - {name: prep, task: prep.yaml}\n  - {name: eval, task: eval.yaml}\n"
    ),
}


@pytest.mark.usefixtures("worker")
async def test_retry_wait_reuses_what_succeeded_and_exits_as_run_wait(
    settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(FLAKY_EVAL)
    code, out, err = await skyrun(settings, "run", str(repo), "--wait")
    assert code == EXIT_FAILED, out + err
    run_id = out.split()[1]

    code, out, err = await skyrun(settings, "retry", run_id, "--wait")
    assert code == EXIT_OK, out + err
    retry_id = f"{run_id}-retry"
    assert f"started: {retry_id}" in out
    assert f"prep           reused from {run_id}" in out
    assert "eval           runs again: it failed" in out
    assert f"run {retry_id}: succeeded" in out and "metric rows = 3" in out
    assert f"log:      http://skyrun.test/runs/{run_id}/logs/prep" in out
    assert f"log:      http://skyrun.test/runs/{retry_id}/logs/eval" in out
    (count,) = (settings.data_path / "buckets").glob("*/prep.count")
    assert count.read_text() == "x\n"

    code, out, _ = await skyrun(settings, "retry", run_id)
    assert code == EXIT_OK and f"was already retried as {retry_id}" in out
    code, _, err = await skyrun(settings, "retry", retry_id)
    assert code == EXIT_FAILED and "succeeded: every stage passed" in err
    code, _, err = await skyrun(settings, "retry", "no/such")
    assert code == EXIT_USAGE and "is not a run id" in err
    code, _, err = await skyrun(settings, "retry", "nothing-0123456789")
    assert code == EXIT_FAILED and "was not found" in err


# Sweeps: `skyrun run ... --sweep KEY=a,b` (repeatable), and `skyrun cancel SWEEP_ID`.


@pytest.mark.usefixtures("worker")
async def test_run_sweep_wait_runs_every_combination(
    settings: Settings, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "t.yaml": 'run: echo "::metric score=$A$B"\n',
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    code, out, err = await skyrun(
        settings, "run", str(repo), "--sweep", "A=1,2", "--sweep", "B=3,4", "--wait"
    )

    assert code == EXIT_OK, (out, err)
    sweep_id = out.split()[2].rstrip(",")
    assert out.startswith(f"started: sweep {sweep_id}, 4 runs\n")
    control = RunControl(client, settings.temporal_task_queue)
    for index, (a, b) in enumerate([("1", "3"), ("1", "4"), ("2", "3"), ("2", "4")], 1):
        run_id = f"{sweep_id}-{index}"
        assert f"  {run_id}  A={a}, B={b}  http://skyrun.test/runs/{run_id}\n" in out
        assert f"run {run_id}: succeeded" in out
        progress = await control.progress(run_id)
        assert progress is not None and progress.metrics == {"score": float(a + b)}
        assert progress.sweep is not None and progress.sweep.values == {"A": a, "B": b}


async def test_run_sweep_usage_errors_start_nothing(
    settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = str(git_repo({"README": "x"}))
    code, _, err = await skyrun(
        settings, "run", repo, "--sweep", "A=1,2,3,4,5", "--sweep", "B=1,2,3,4"
    )
    assert code == 2 and "this sweep would start 20 runs; SKYRUN_MAX_SWEEP is 16" in err
    code, _, err = await skyrun(settings, "run", repo, "--sweep", "A=1,,2")
    assert code == 2 and "A lists an empty value" in err
    code, _, err = await skyrun(settings, "run", repo, "--sweep", "A=1", "--sweep", "A=2,3")
    assert code == 2 and "A is swept twice" in err
    code, _, err = await skyrun(settings, "run", repo, "--sweep", "A=1")
    assert code == 2 and "skyrun run REPO --sweep LR=0.01,0.1" in err


@pytest.mark.usefixtures("worker")
async def test_cancel_a_sweep_from_the_command_line(
    settings: Settings, client: Client, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = git_repo(
        {
            "t.yaml": "run: |\n  echo started\n  sleep 300\n",
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    code, out, _ = await skyrun(settings, "run", str(repo), "--sweep", "A=1,2")
    assert code == EXIT_OK
    sweep_id = out.split()[2].rstrip(",")
    control = RunControl(client, settings.temporal_task_queue)
    for index in (1, 2):
        await wait_stage_running(control, f"{sweep_id}-{index}", "t")

    code, out, _ = await skyrun(settings, "cancel", sweep_id)

    assert code == EXIT_OK and "cancelling" in out
    for index in (1, 2):
        progress = await wait_finished(control, f"{sweep_id}-{index}")
        assert progress.state is RunState.CANCELLED
    assert clusters_left(settings) == []


# `skyrun clusters`: what the deployment's runs hold now.


@pytest.mark.usefixtures("worker")
async def test_clusters_lists_what_running_runs_hold_and_nothing_after(
    settings: Settings, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "t.yaml": "run: |\n  echo started\n  sleep 300\n",
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml, cluster: box}]\n",
        }
    )
    code, out, _ = await skyrun(settings, "clusters")
    assert code == EXIT_OK and out.strip() == NO_CLUSTERS
    control = RunControl(client, settings.temporal_task_queue)
    run_id = (await control.start(request_for(repo))).run_id
    await wait_stage_running(control, run_id, "t")

    code, out, _ = await skyrun(settings, "clusters")

    assert code == EXIT_OK, out
    heading, row = out.strip().splitlines()
    assert heading.startswith("CLUSTER") and "COST SO FAR" in heading
    name, listed_run, in_use, *_ = row.split()
    assert name == cluster_name_for(run_id, "box") and listed_run == run_id and in_use == "t"
    assert row.endswith("$0.00")  # no price set for the local backend: free
    assert await control.cancel(run_id)
    await wait_finished(control, run_id)
    code, out, _ = await skyrun(settings, "clusters")
    assert code == EXIT_OK and out.strip() == NO_CLUSTERS


@pytest.mark.usefixtures("worker")
async def test_clusters_lists_the_warm_clusters_a_lane_holds_and_until_when(
    settings: Settings, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "t.yaml": "run: echo done\n",
            ".skyrun.yaml": "keep_warm_minutes: 7\n"
            "stages: [{name: t, task: t.yaml, cluster: box}]\n",
        }
    )
    control = RunControl(client, settings.temporal_task_queue)
    run_id = (await control.start(request_for(repo))).run_id
    assert (await wait_finished(control, run_id)).state is RunState.SUCCEEDED

    code, out, _ = await skyrun(settings, "clusters")

    assert code == EXIT_OK, out
    heading, row = out.strip().splitlines()
    assert "WARM UNTIL" in heading
    name, listed_run, in_use, *_ = row.split()
    assert (name, listed_run, in_use) == (cluster_name_for(run_id, "box"), run_id, "warm")
    (warm,) = await control.warm_clusters()
    assert format_time(warm.until) in row and row.endswith("$0.00")


@pytest.mark.usefixtures("worker")
async def test_clusters_lists_a_warm_cluster_whose_time_ended_as_tearing_down(
    settings: Settings, client: Client, git_repo: Callable[..., Path]
) -> None:
    """Its teardown waits for a worker that is away: it is still up, and still costs."""
    repo = git_repo({"t.yaml": "run: echo done\n"})
    gone = f"{settings.temporal_task_queue}-away"
    cluster = handed_cluster(repo, gone, "old-run", 1, since_minutes=-60, usd=0.6)
    await hand_over(client, settings, repo, cluster)
    control = RunControl(client, settings.temporal_task_queue)
    while not await control.warm_clusters():  # the list finds the lane through visibility
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)

    code, out, _ = await skyrun(settings, "clusters")

    assert code == EXIT_OK, out
    _, row = out.strip().splitlines()
    assert row.split()[:4] == [cluster.name, "old-run", "tearing", "down"]
    assert row.endswith("$0.60")  # an hour warm at $0.60/h (a cent more takes another minute)
