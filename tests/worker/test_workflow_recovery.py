"""A run through infrastructure failures, end to end on a real Temporal dev server: the local
backend's jobs really run, and a wrapper stands in for the infrastructure losing a cluster
(which a directory on this machine cannot do; tests/slurm preempts a real Slurm allocation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from temporalio.client import Client

from tests.runs import clusters_left, request_for, wait_finished
from worker.activities import PipelineActivities
from worker.backends.base import InfraError, TaskRun
from worker.backends.local import LocalBackend
from worker.contract import InfraCause, RunProgress, RunState, StageState
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

PIPELINE = "stages:\n  - {name: a, task: a.yaml}\n  - {name: b, task: b.yaml}\nmax_infra_retries: "
FILES = {"a.yaml": "run: echo '::metric rows=10'\n", "b.yaml": "run: echo '::metric acc=0.9'\n"}


class Preempting:
    """The local backend, whose cluster for `stage` is lost `times` times after its job ran."""

    name = "local"

    def __init__(
        self, settings: Settings, stage: str, times: int, provisioning_fails: int = 0
    ) -> None:
        self.local = LocalBackend.from_settings(settings)
        self.stage, self.times = stage, times
        self.provisioning_fails = provisioning_fails
        self.launches: list[str] = []

    async def validate(self, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> None:
        await self.local.validate(task_yaml, envs, checkout_dir)

    async def run(self, task: TaskRun, log: BinaryIO) -> int:
        if task.provision_only and task.stage == self.stage and self.provisioning_fails > 0:
            self.provisioning_fails -= 1
            raise InfraError(InfraCause.CAPACITY, "no capacity for the resources anywhere")
        code = await self.local.run(task, log)
        if task.provision_only:
            return code  # provisioned ahead of its stage (prelaunch): no job ran to lose
        self.launches.append(task.stage)
        if task.stage == self.stage and self.times > 0:
            self.times -= 1
            raise InfraError(InfraCause.LOST, f"cluster {task.cluster_name} was preempted")
        return code

    async def down(self, cluster_name: str) -> None:
        await self.local.down(cluster_name)

    def dashboard_url(self) -> str:
        return ""


async def run_with(
    client: Client, settings: Settings, repo: Path, backend: Preempting
) -> tuple[str, RunProgress]:
    activities = PipelineActivities(settings, backend, client=client)
    async with running_workers(build_workers(client, settings, activities=activities)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(repo))
        return outcome.run_id, await wait_finished(control, outcome.run_id)


async def test_a_preempted_stage_is_relaunched_and_the_run_succeeds(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({**FILES, ".skyrun.yaml": PIPELINE + "2\n"})
    backend = Preempting(settings, "b", times=1)

    run_id, progress = await run_with(client, settings, repo, backend)

    assert progress.state is RunState.SUCCEEDED, progress.error
    a, b = progress.stages
    assert (a.infra_retries, b.infra_retries) == (0, 1)
    assert b.infra_recovered == [InfraCause.LOST]
    assert b.metrics == {"acc": 0.9}
    assert backend.launches == ["a", "b", "b"]
    log = (settings.logs_dir / run_id / "b.log").read_text()
    assert "relaunching cluster b (1 of max_infra_retries 2" in log
    assert clusters_left(settings) == []


async def test_past_the_limit_the_run_fails_naming_the_infrastructure(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({**FILES, ".skyrun.yaml": PIPELINE + "1\n"})
    backend = Preempting(settings, "a", times=5)

    _, progress = await run_with(client, settings, repo, backend)

    assert progress.state is RunState.FAILED
    error = progress.error
    assert "stage 'a' failed on the infrastructure, not in its job" in error
    assert "the cluster was preempted or lost" in error
    assert "1 relaunches did not help (max_infra_retries: 1" in error
    assert "exit status" not in error
    assert [s.state for s in progress.stages] == [StageState.FAILED, StageState.SKIPPED]
    assert backend.launches == ["a", "a"]
    assert clusters_left(settings) == []


async def test_a_recovery_while_provisioning_ahead_shows_on_the_stage(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    """b's cluster, provisioned while a runs, finds no capacity once and is launched again
    there; its job then runs on it, and the stage counts that recovery like one of its own."""
    files = {**FILES, "a.yaml": "run: sleep 2\n"}
    repo = git_repo({**files, ".skyrun.yaml": PIPELINE + "2\n"})
    backend = Preempting(settings, "b", times=0, provisioning_fails=1)

    run_id, progress = await run_with(client, settings, repo, backend)

    assert progress.state is RunState.SUCCEEDED, progress.error
    b = progress.stages[1]
    assert b.provision_started_at and not b.provision_failed
    assert (b.infra_retries, b.infra_recovered) == (1, [InfraCause.CAPACITY])
    assert backend.launches == ["a", "b"]  # b's job ran once, on the cluster provisioned ahead
    log = (settings.logs_dir / run_id / "b.log").read_text()
    assert "relaunching cluster b (1 of max_infra_retries 2" in log
    assert clusters_left(settings) == []
