"""skyrun with SKYRUN_BACKEND=skypilot on a real one-node Slurm cluster, via a SkyPilot API server.

Each test is one run on real SkyPilot clusters (Slurm jobs on this machine) and checks what is
left afterwards in `sky status` and `squeue`, not just what skyrun reports.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

from tests.runs import head
from tests.slurm.conftest import LOGIN_USER, ClusterWatch, skyrun_clusters, slurm_jobs
from worker.backends.base import cluster_name_for
from worker.contract import RunProgress, RunRequest, RunState, StageState, Trigger, lane_for_branch
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

pytestmark = pytest.mark.slurm

RESOURCES = "resources: {infra: slurm, cpus: 1, memory: 1}\n"
AUTOSTOP_MINUTES = 30  # examples/mock-training-slurm/.skyrun.yaml; also the pipeline default
RUN_TIMEOUT_S = 780
GONE_TIMEOUT_S = 60


@pytest.fixture
async def control(client: Client, slurm_settings: Settings) -> AsyncIterator[RunControl]:
    async with running_workers(build_workers(client, slurm_settings)):
        yield RunControl(client, slurm_settings.temporal_task_queue)


def request_for(repo: Path, commit: str = "") -> RunRequest:
    return RunRequest(
        repo=str(repo),
        clone_url=str(repo),
        ref="main",
        commit=commit,
        trigger=Trigger.CLI,
        requested_by="tester",
        lane=lane_for_branch(str(repo), "main"),
    )


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def wait_finished(control: RunControl, run_id: str) -> RunProgress:
    async def finished() -> RunProgress:
        while True:
            progress = await control.progress(run_id)
            if progress is not None and progress.state.finished:
                return progress
            await asyncio.sleep(1)

    return await asyncio.wait_for(finished(), RUN_TIMEOUT_S)


def read_log(settings: Settings, run_id: str, stage: str) -> str:
    path = settings.logs_dir / run_id / f"{stage}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def describe(progress: RunProgress, settings: Settings) -> str:
    """Enough to debug a failed assertion: the run's error and each stage's log tail."""
    lines = [f"run {progress.run_id}: {progress.state.value}: {progress.error}"]
    for stage in progress.stages:
        lines.append(f"--- {stage.name}: {stage.state.value} ({stage.error})")
        lines += read_log(settings, progress.run_id, stage.name).splitlines()[-40:]
    return "\n".join(lines)


def requests_for(sky: Any, cluster: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, status, body) of every request the API server got for `cluster`."""
    found = []
    for r in sky.api_status(all_status=True, cluster_name=cluster):
        if r.cluster_name != cluster:  # the filter is the server's; never trust it blindly
            continue
        body = json.loads(r.request_body) if r.request_body else {}
        status = str(getattr(r.status, "value", r.status))
        found.append((str(r.name).rsplit(".", 1)[-1], status, body))
    return found


def launch_autostops(body: dict[str, Any]) -> list[Any]:
    """The autostop config of each resource in a launch request (the SDK puts it on the task)."""
    found = []
    for doc in yaml.safe_load_all(body.get("task") or ""):
        resources = doc.get("resources") if isinstance(doc, dict) else None
        if isinstance(resources, dict):
            options = resources.get("any_of") or resources.get("ordered") or [resources]
            found += [{**resources, **option}.get("autostop") for option in options]
    return found


def assert_launches_carry_the_backstop(sky: Any, clusters: list[str]) -> None:
    """Every launch request asked for idle autostop with down (cancelled launches too)."""
    for cluster in clusters:
        launches = [body for name, _, body in requests_for(sky, cluster) if name == "launch"]
        assert launches, f"no launch request for {cluster}"
        for body in launches:
            autostops = launch_autostops(body)
            assert autostops, body.get("task")
            assert all(a == {"idle_minutes": AUTOSTOP_MINUTES, "down": True} for a in autostops), (
                autostops
            )


def assert_autostop_seen_on(watch: ClusterWatch, clusters: list[str]) -> None:
    """SkyPilot set it on the cluster: `sky status` showed it UP with autostop and down."""
    for cluster in clusters:
        seen = watch.seen.get(cluster)
        assert seen is not None, f"{cluster} never showed up in sky status: {watch.seen}"
        assert "UP" in seen.statuses, (cluster, seen)
        # Right after the launch a record may be UP before its autostop is written (-1).
        assert seen.last_up == (AUTOSTOP_MINUTES, True), (cluster, seen)
        assert "Slurm" in seen.resources, (cluster, seen)


async def assert_nothing_left(sky: Any, run_id: str) -> None:
    """No cluster of the run in `sky status` (INIT included) and no Slurm job in `squeue`."""
    clusters = await asyncio.to_thread(skyrun_clusters, sky)
    assert [r["name"] for r in clusters if run_id in r["name"]] == []
    # A cancelled Slurm job may linger a moment in COMPLETING.
    await wait_for(lambda: slurm_jobs(run_id) == [], GONE_TIMEOUT_S, "the run's Slurm jobs to go")


def login_user_processes(pattern: str) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "args=", "-u", LOGIN_USER], capture_output=True, text=True, check=False
    ).stdout
    return [line for line in out.splitlines() if pattern in line]


@pytest.mark.timeout(1200)
async def test_example_pipeline_runs_on_slurm_clusters_and_leaves_none(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    slurm_example_files: dict[str, str],
    sky: Any,
    watch: ClusterWatch,
) -> None:
    # Warm for a minute: the lane's second run below launches on the same two clusters.
    files = dict(slurm_example_files)
    files[".skyrun.yaml"] += "keep_warm_minutes: 1\n"
    repo = git_repo(files)
    outcome = await control.start(request_for(repo, head(repo)))
    run_id = outcome.run_id
    progress = await wait_finished(control, run_id)

    assert progress.state is RunState.SUCCEEDED, describe(progress, slurm_settings)
    assert progress.backend == "skypilot"
    assert [s.name for s in progress.stages] == ["preprocess", "train", "eval"]
    assert all(s.state is StageState.SUCCEEDED for s in progress.stages)
    assert [s.launched for s in progress.stages] == [True, True, False]
    print({s.name: s.duration_s for s in progress.stages})

    pre, train = cluster_name_for(run_id, "preprocess"), cluster_name_for(run_id, "train")
    logs = {s: read_log(slurm_settings, run_id, s) for s in ("preprocess", "train", "eval")}
    assert f"[skyrun] launching cluster {pre} " in logs["preprocess"]
    assert f"[skyrun] launching cluster {train} " in logs["train"]
    assert f"[skyrun] running on cluster {train} " in logs["eval"]
    assert "[skyrun] launching cluster" not in logs["eval"]
    # The jobs' own output, as SkyPilot streamed it from the node.
    assert "(train, pid=" in logs["train"] and "epoch 20/20" in logs["train"]
    assert "Metric - accuracy:" in logs["eval"]

    # Train and eval shared one cluster: one launch (with setup, no job: provisioned while
    # preprocess ran), then an exec for each; preprocess had its own.
    train_requests = [name for name, _, _ in requests_for(sky, train)]
    assert train_requests.count("launch") == 1 and train_requests.count("exec") == 2, train_requests
    preprocess, train_stage = progress.stages[0], progress.stages[1]
    assert train_stage.provision_started_at < preprocess.finished_at
    assert preprocess.finished_at <= train_stage.job_started_at
    # SkyPilot runs a detached setup as a job of its own: provisioning ended when it did.
    assert "[skyrun] cluster train provisioned (setup exited with status 0)" in logs["train"]
    assert "provisioning cluster train ahead of the stages it needs" in logs["train"]
    assert [name for name, _, _ in requests_for(sky, pre)].count("exec") == 0

    assert 0.8 < progress.metrics["accuracy"] <= 1.0
    assert progress.metrics["accuracy_pct"] == pytest.approx(progress.metrics["accuracy"] * 100)
    assert progress.metrics["samples"] == 4000
    assert "train_loss" in progress.metrics
    assert "| test |" in progress.stages[2].report

    assert {name for name in watch.seen if run_id in name} == {pre, train}
    assert_autostop_seen_on(watch, [pre, train])
    assert_launches_carry_the_backstop(sky, [pre, train])
    # Each cluster was a Slurm job on this machine.
    jobs = sorted(job for job in watch.jobs_seen if run_id in job)
    assert len(jobs) == 2 and jobs[0].startswith(pre) and jobs[1].startswith(train), jobs
    assert progress.clusters_up == []

    # The lane's next run: both clusters are warm, so nothing is provisioned.
    assert sorted(c.name for c in await control.warm_clusters()) == sorted([pre, train])
    git_repo({"NOTES.md": "a second commit\n"})
    again = await control.start(request_for(repo, head(repo)))
    second = await wait_finished(control, again.run_id)
    assert second.state is RunState.SUCCEEDED, describe(second, slurm_settings)
    assert [s.cluster_reused_from for s in second.stages] == [run_id] * 3
    for stage in ("preprocess", "train"):
        log = read_log(slurm_settings, again.run_id, stage)
        assert f"reused warm cluster {stage} from run {run_id}" in log, log
    # No new Slurm allocation: the same two jobs carried both runs.
    assert sorted(job for job in watch.jobs_seen if again.run_id in job) == []
    assert len(slurm_jobs(run_id)) == 2
    # Nobody takes them within the minute: the lane tears them down.
    await wait_for(
        lambda: not [r for r in skyrun_clusters(sky) if run_id in r["name"]],
        240,
        "the warm clusters to be torn down when their time ended",
    )
    await assert_nothing_left(sky, run_id)
    assert await control.warm_clusters() == []


@pytest.mark.timeout(600)
async def test_failing_stage_is_reported_with_its_log_and_its_cluster_goes(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    sky: Any,
    watch: ClusterWatch,
) -> None:
    repo = git_repo(
        {
            "fail.yaml": RESOURCES
            + "run: |\n  echo about to fail\n  echo 'Traceback: boom' >&2\n  exit 3\n",
            "never.yaml": RESOURCES + "run: echo never\n",
            ".skyrun.yaml": (
                "stages:\n  - {name: fail, task: fail.yaml, cluster: shared}\n"
                "  - {name: never, task: never.yaml, cluster: shared}\n"
            ),
        }
    )
    outcome = await control.start(request_for(repo))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.FAILED, describe(progress, slurm_settings)
    # SkyPilot says FAILED (tail_logs 100); the run commands' wrapper told the task's own code,
    # and the cluster was still up: the task's failure, not retried.
    assert progress.error == "stage 'fail' failed with exit status 3"
    states = {s.name: s.state for s in progress.stages}
    assert states == {"fail": StageState.FAILED, "never": StageState.SKIPPED}
    failed = progress.failed_stage
    assert failed is not None and failed.exit_code == 3 and failed.infra_retries == 0
    assert any("Traceback: boom" in line for line in failed.log_tail), failed.log_tail
    log = read_log(slurm_settings, outcome.run_id, "fail")
    assert "about to fail" in log and "Traceback: boom" in log

    cluster = cluster_name_for(outcome.run_id, "shared")
    assert_launches_carry_the_backstop(sky, [cluster])
    assert [name for name in watch.seen if outcome.run_id in name] == [cluster]
    await assert_nothing_left(sky, outcome.run_id)


@pytest.mark.timeout(900)
async def test_a_preempted_cluster_is_relaunched_and_the_stage_succeeds(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    sky: Any,
) -> None:
    """The Slurm allocation under the cluster is cancelled mid-job (what a preemption does to a
    node): skyrun sees the cluster gone, relaunches it and the stage's job runs again."""
    first = f"/tmp/skyrun-preempt-{time.time_ns()}"
    repo = git_repo(
        {
            "train.yaml": RESOURCES
            + "run: |\n"
            + f"  if [ -e {first} ]; then echo second attempt; echo '::metric acc=0.9'; exit; fi\n"
            + f"  touch {first}\n  echo job started\n  sleep 600\n",
            ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\nmax_infra_retries: 1\n",
        }
    )
    outcome = await control.start(request_for(repo))
    try:
        await wait_for(
            lambda: "job started" in read_log(slurm_settings, outcome.run_id, "train"),
            420,
            "the job's first output line in the log store",
        )
        jobs = slurm_jobs(outcome.run_id)
        assert len(jobs) == 1, jobs
        cancel = ["scancel", jobs[0].split()[0]]
        await asyncio.to_thread(subprocess.run, cancel, check=True, timeout=30)
        progress = await wait_finished(control, outcome.run_id)
    finally:
        Path(first).unlink(missing_ok=True)

    assert progress.state is RunState.SUCCEEDED, describe(progress, slurm_settings)
    stage = progress.stages[0]
    assert stage.infra_retries == 1 and stage.metrics == {"acc": 0.9}
    log = read_log(slurm_settings, outcome.run_id, "train")
    assert "infrastructure failure (the cluster was preempted or lost)" in log, log
    assert "relaunching cluster train (1 of max_infra_retries 1" in log
    assert log.index("job started") < log.index("second attempt")
    cluster = cluster_name_for(outcome.run_id, "train")
    launches = [name for name, _, _ in requests_for(sky, cluster) if name == "launch"]
    assert len(launches) == 2, requests_for(sky, cluster)
    await assert_nothing_left(sky, outcome.run_id)


@pytest.mark.timeout(600)
async def test_cancel_in_the_middle_of_a_launch_leaves_no_cluster(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    sky: Any,
) -> None:
    repo = git_repo(
        {
            "train.yaml": RESOURCES + "run: echo started; sleep 600\n",
            ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\n",
        }
    )
    outcome = await control.start(request_for(repo))
    cluster = cluster_name_for(outcome.run_id, "train")
    # The node (a Slurm job) is up and SkyPilot is setting its runtime up on it over srun.
    await wait_for(
        lambda: "Instance is up." in read_log(slurm_settings, outcome.run_id, "train"),
        300,
        "SkyPilot to provision the node",
    )
    assert slurm_jobs(outcome.run_id)
    log = read_log(slurm_settings, outcome.run_id, "train")
    assert "Cluster launched" not in log and "[skyrun] job " not in log, log
    records = await asyncio.to_thread(skyrun_clusters, sky)
    assert [str(r["status"].value) for r in records if r["name"] == cluster] == ["INIT"]

    assert await control.cancel(outcome.run_id)
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.CANCELLED, describe(progress, slurm_settings)
    assert progress.stages[0].state is StageState.CANCELLED
    statuses = {name: status for name, status, _ in requests_for(sky, cluster)}
    assert statuses.get("launch") == "CANCELLED", statuses
    assert statuses.get("down") == "SUCCEEDED", statuses
    assert_launches_carry_the_backstop(sky, [cluster])
    await assert_nothing_left(sky, outcome.run_id)


@pytest.mark.timeout(600)
async def test_cancel_in_the_middle_of_a_job_kills_it_and_leaves_no_cluster(
    control: RunControl,
    slurm_settings: Settings,
    git_repo: Callable[..., Path],
    sky: Any,
    watch: ClusterWatch,
) -> None:
    marker = f"sleep {600 + (time.time_ns() % 997)}"  # this test's job, told apart from others
    repo = git_repo(
        {
            "train.yaml": RESOURCES + f"run: |\n  echo job started\n  {marker}\n",
            ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\n",
        }
    )
    outcome = await control.start(request_for(repo))
    cluster = cluster_name_for(outcome.run_id, "train")
    await wait_for(
        lambda: "job started" in read_log(slurm_settings, outcome.run_id, "train"),
        420,
        "the job's first output line in the log store",
    )
    assert login_user_processes(marker), "the job is running on the node"

    assert await control.cancel(outcome.run_id)
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.CANCELLED, describe(progress, slurm_settings)
    assert progress.stages[0].state is StageState.CANCELLED
    assert_autostop_seen_on(watch, [cluster])
    assert_launches_carry_the_backstop(sky, [cluster])
    await assert_nothing_left(sky, outcome.run_id)
    await wait_for(lambda: not login_user_processes(marker), GONE_TIMEOUT_S, "the job to die")
