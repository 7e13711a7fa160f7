"""Scale-out for real: `skyrun bot` and `skyrun worker` processes against one Temporal.

Two bots answer the same webhooks, several workers share the runs, and workers are killed
(SIGKILL) or stopped (SIGTERM) in the middle of a stage. All with the local backend; the SkyPilot
backend behind an API server is covered by tests/slurm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from tests.deploy.processes import WORKER_ID_ENV, Fleet, Proc, fleet, process_alive
from tests.fakes.github import FakeGitHub, deliver
from tests.runs import request_for, wait_finished
from worker.backends.local import list_clusters
from worker.contract import RunProgress, RunState, StageState
from worker.models import PrepareOutput
from worker.runcontrol import RunControl

SECRET = "scale-out-webhook-secret"
RUNS = 8
PIPELINE = {
    ".skyrun.yaml": "on: {push: [main]}\nstages: [{name: work, task: work.yaml}]\n",
    "work.yaml": (
        f'run: |\n  sleep 1\n  echo working\n  echo "::metric worker=${WORKER_ID_ENV}"\n'
    ),
}


# The tasks here report which worker ran them (from the worker's environment) and the tests
# watch their processes by host pid: both are what the local sandbox hides by design.
pytestmark = pytest.mark.host_processes


@pytest.fixture
async def processes(client: Client, task_queue: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    target = client.service_client.config.target_host
    async with fleet(tmp_path / "fleet", target, task_queue, SKYRUN_LOCAL_SANDBOX="off") as running:
        yield running


def worker_of(progress: RunProgress) -> int:
    return int(progress.stages[0].metrics["worker"])


async def only_run(control: RunControl, repo: str) -> str:
    """The id of the run a repository's push started, once visible (and checked to be the one)."""
    for _ in range(600):
        runs = await control.list_runs(repo=repo)
        if runs:
            assert len(runs) == 1, runs
            return runs[0].run_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"no run started for {repo}")


def clusters_of(proc: Proc) -> list[str]:
    assert proc.data_dir is not None
    return list_clusters(proc.data_dir / "clusters")


async def test_two_bots_start_each_webhook_once_and_three_workers_share_the_runs(
    processes: Fleet, client: Client, task_queue: str, tmp_path: Path
) -> None:
    with FakeGitHub(tmp_path / "github") as github:
        processes.env.update(
            GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=github.token, GITHUB_API_URL=github.url
        )
        workers = [
            await processes.worker(f"worker-{n}", tmp_path / f"data-{n}", n) for n in (1, 2, 3)
        ]
        bots = [await processes.bot(f"bot-{n}", tmp_path / f"bot-{n}") for n in (1, 2)]
        repos = [f"acme/scale-{uuid.uuid4().hex[:6]}-{n}" for n in range(RUNS)]
        deliveries = {}
        for repo in repos:
            github.add_repo(repo, PIPELINE)
            payload = github.push_payload(
                repo, "refs/heads/main", github.head(repo), sender="alice"
            )
            deliveries[repo] = (str(uuid.uuid4()), payload)

        async with httpx.AsyncClient(timeout=30) as http:

            async def both_bots(repo: str) -> list[httpx.Response]:
                delivery, payload = deliveries[repo]
                return await asyncio.gather(
                    *(
                        deliver(
                            http,
                            "push",
                            payload,
                            secret=SECRET,
                            delivery=delivery,
                            path=f"{bot.url}/github/webhook",
                        )
                        for bot in bots
                    )
                )

            answers = await asyncio.gather(*(both_bots(repo) for repo in repos))
            for pair in answers:
                # One bot takes the delivery (it starts the run, or hands it to a worker keyed by
                # the delivery id); the other is told it was already handled.
                outcomes = sorted(response.json()["outcome"] for response in pair)
                assert outcomes in (["accepted", "duplicate"], ["duplicate", "started"]), [
                    r.text for r in pair
                ]

            control = RunControl(client, task_queue)
            run_ids = await asyncio.gather(*(only_run(control, repo) for repo in repos))
            finished = await asyncio.gather(
                *(wait_finished(control, run_id, timeout=180) for run_id in run_ids)
            )
            assert all(p.state is RunState.SUCCEEDED for p in finished), [
                (p.run_id, p.state, p.error) for p in finished
            ]
            spread = Counter(worker_of(p) for p in finished)
            assert len(spread) >= 2, f"all {RUNS} runs ran on one worker: {spread}"

            # Each bot serves every run's log, whichever worker wrote it: one log store.
            for run_id in run_ids:
                for bot in bots:
                    log = await http.get(f"{bot.url}/runs/{run_id}/logs/work")
                    assert log.status_code == 200 and "working" in log.text
            # A redelivery, later and to the other bot, still starts nothing.
            repo = repos[0]
            delivery, payload = deliveries[repo]
            again = await deliver(
                http,
                "push",
                payload,
                secret=SECRET,
                delivery=delivery,
                path=f"{bots[1].url}/github/webhook",
            )
            assert again.json()["outcome"] == "duplicate"
            for repo in repos:
                assert len(await control.list_runs(repo=repo)) == 1
        assert all(clusters_of(w) == [] for w in workers)


SLOW_STAGE = (
    "run: |\n"
    '  if [ -e {marker} ]; then echo "second attempt on worker ${env}"; exit 0; fi\n'
    '  echo "${env} $$" > {marker}\n'
    "  sleep 300\n"
)


async def pool_of_two(processes: Fleet, tmp_path: Path) -> dict[int, Proc]:
    """Two workers on one host and one data dir: one task queue, one pool of local clusters."""
    shared = tmp_path / "shared-data"
    return {n: await processes.worker(f"worker-{n}", shared, n) for n in (1, 2)}


async def started_on(marker: Path) -> tuple[int, int]:
    """(worker id, job pid) once the first attempt of the slow stage runs."""
    for _ in range(600):
        if marker.exists() and marker.read_text().strip():
            worker, pid = marker.read_text().split()
            return int(worker), int(pid)
        await asyncio.sleep(0.1)
    raise AssertionError("the stage never started")


async def test_a_sigkilled_worker_stage_is_taken_over_by_a_worker_on_the_same_data_dir(
    processes: Fleet,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    git_repo: Callable[..., Path],
) -> None:
    marker = tmp_path / "marker"
    repo = git_repo(
        {
            "t.yaml": SLOW_STAGE.format(marker=marker, env=WORKER_ID_ENV),
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    pool = await pool_of_two(processes, tmp_path)
    control = RunControl(client, task_queue)
    outcome = await control.start(request_for(repo))
    victim, job = await started_on(marker)
    await processes.stop(pool[victim], signal.SIGKILL)
    await asyncio.sleep(1)
    assert not process_alive(job), "the job outlived its worker"

    # The heartbeat times out (20 s), the retry goes to the shared queue, the other worker runs it.
    progress = await wait_finished(control, outcome.run_id, timeout=120)
    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.stages[0].state is StageState.SUCCEEDED
    survivor = 3 - victim
    log = (processes.log_dir / outcome.run_id / "t.log").read_text()
    assert "(attempt 2)" in log and f"second attempt on worker {survivor}" in log
    assert clusters_of(pool[survivor]) == []


async def test_a_sigtermed_worker_lets_its_stage_run_then_hands_it_over_and_leaves_nothing(
    processes: Fleet,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    git_repo: Callable[..., Path],
    stop_needs_s: float,
) -> None:
    marker = tmp_path / "marker"
    repo = git_repo(
        {
            "t.yaml": SLOW_STAGE.format(marker=marker, env=WORKER_ID_ENV),
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    pool = await pool_of_two(processes, tmp_path)
    control = RunControl(client, task_queue)
    outcome = await control.start(request_for(repo))
    victim, job = await started_on(marker)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    pool[victim].process.send_signal(signal.SIGTERM)
    await asyncio.sleep(3)
    assert process_alive(job), "a stopping worker gives its running stage time to finish"

    code = await asyncio.wait_for(pool[victim].process.wait(), stop_needs_s)
    assert code == 0
    assert loop.time() - asked < stop_needs_s
    assert not process_alive(job), "a stopped worker leaves no job behind"

    progress = await wait_finished(control, outcome.run_id, timeout=120)
    assert progress.state is RunState.SUCCEEDED, progress.error
    survivor = 3 - victim
    log = (processes.log_dir / outcome.run_id / "t.log").read_text()
    assert "(attempt 2)" in log and f"second attempt on worker {survivor}" in log
    assert clusters_of(pool[survivor]) == []


async def test_a_sigtermed_worker_finishes_a_short_stage_before_it_exits(
    processes: Fleet,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    git_repo: Callable[..., Path],
) -> None:
    marker = tmp_path / "marker"
    repo = git_repo(
        {
            "a.yaml": f'run: |\n  echo "${WORKER_ID_ENV} $$" > {marker}\n  sleep 5\n  echo done\n',
            "b.yaml": f'run: echo "b on worker ${WORKER_ID_ENV}"\n',
            ".skyrun.yaml": "stages: [{name: a, task: a.yaml}, {name: b, task: b.yaml}]\n",
        }
    )
    pool = await pool_of_two(processes, tmp_path)
    control = RunControl(client, task_queue)
    outcome = await control.start(request_for(repo))
    victim, _ = await started_on(marker)
    await processes.stop(pool[victim], signal.SIGTERM, timeout=30)

    progress = await wait_finished(control, outcome.run_id, timeout=60)
    assert progress.state is RunState.SUCCEEDED, progress.error
    log_a = (processes.log_dir / outcome.run_id / "a.log").read_text()
    assert "done" in log_a and "(attempt 2)" not in log_a  # finished, not retried
    log_b = (processes.log_dir / outcome.run_id / "b.log").read_text()
    assert f"b on worker {3 - victim}" in log_b


GONE_S = 10
WORKER_GONE_SUPPORTED = "worker_gone_s" in {f.name for f in dataclasses.fields(PrepareOutput)}


@pytest.mark.skipif(
    not WORKER_GONE_SUPPORTED,
    reason="needs SKYRUN_WORKER_GONE_SECONDS in the workflow (proposed with issue 7)",
)
async def test_a_sigkilled_worker_on_its_own_data_dir_fails_its_run_fast_and_cleans_up_later(
    processes: Fleet,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    git_repo: Callable[..., Path],
) -> None:
    marker = tmp_path / "marker"
    repo = git_repo(
        {
            "t.yaml": SLOW_STAGE.format(marker=marker, env=WORKER_ID_ENV),
            ".skyrun.yaml": "stages: [{name: t, task: t.yaml}]\n",
        }
    )
    processes.env["SKYRUN_WORKER_GONE_SECONDS"] = str(GONE_S)
    data = {n: tmp_path / f"data-{n}" for n in (1, 2)}
    workers = {n: await processes.worker(f"worker-{n}", data[n], n) for n in (1, 2)}
    control = RunControl(client, task_queue)
    outcome = await control.start(request_for(repo))
    victim, job = await started_on(marker)
    await processes.stop(workers[victim], signal.SIGKILL)
    await asyncio.sleep(1)
    assert not process_alive(job), "the job outlived its worker"

    # The other worker carries the workflow on: heartbeat timeout (20 s), then the retry, the
    # down and the cleanup each wait GONE_S for the victim's queue, and the run fails.
    progress = await wait_finished(control, outcome.run_id, timeout=120)
    assert progress.state is RunState.FAILED
    assert f"did not come back within {GONE_S} s" in progress.error
    assert "stay on that worker's disk" in progress.error
    assert progress.stages[0].state is StageState.FAILED
    (left,) = clusters_of(workers[victim])

    # Back after a while (the reaper leaves young entries alone), it removes what was left.
    for path in (data[victim] / "clusters" / left, data[victim] / "checkouts" / outcome.run_id):
        os.utime(path, (0, 0))
    back = await processes.worker("worker-back", data[victim], victim)
    assert clusters_of(back) == []
    assert not (data[victim] / "checkouts" / outcome.run_id).exists()
