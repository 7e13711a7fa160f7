"""run_stage's recovery from infrastructure failures (worker/activities.py), with a scripted
backend: a failing job is the task's failure, a lost cluster is relaunched up to the limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from sky.jobs import ManagedJobStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.worker.backends.fake_sky import FakeSky
from worker import metrics as worker_metrics
from worker.activities import USER_ERROR, PipelineActivities
from worker.backends.base import EXIT_FAILED, InfraError, TaskRun
from worker.backends.skypilot import SkyPilotBackend
from worker.contract import InfraCause, RunRequest
from worker.models import PlannedStage, StageInput
from worker.settings import Settings


class FlakyInfra:
    """Fails `failures` times with an infrastructure error, then returns `code`."""

    name = "flaky"

    def __init__(self, failures: int, cause: InfraCause = InfraCause.LOST, code: int = 0) -> None:
        self.failures, self.cause, self.code = failures, cause, code
        self.runs: list[bool] = []
        """`launch` of every run call, in order."""
        self.tasks: list[TaskRun] = []
        self.downs: list[str] = []

    async def validate(self, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> None:
        return None

    async def run(self, task: TaskRun, log: BinaryIO) -> int:
        self.runs.append(task.launch)
        self.tasks.append(task)
        log.write(f"job attempt {len(self.runs)}\n".encode())
        if len(self.runs) <= self.failures:
            raise InfraError(self.cause, f"cluster {task.cluster_name} went away")
        return self.code

    async def down(self, cluster_name: str) -> None:
        self.downs.append(cluster_name)

    def dashboard_url(self) -> str:
        return ""


def infra_count(cause: InfraCause, outcome: str) -> float:
    value = worker_metrics.INFRA_FAILURES.labels(cause.value, outcome)._value.get()
    return float(value)


async def run_stage(
    settings: Settings,
    repo: Path,
    backend: FlakyInfra | SkyPilotBackend,
    *,
    launch: bool = True,
    retries: int = 2,
    managed: bool = False,
) -> tuple[PipelineActivities, object]:
    activities = PipelineActivities(settings, backend)
    stage = PlannedStage(
        "train", "train", "sr-r-train", "t.yaml", "run: x\n", {}, launch=launch, managed=managed
    )
    request = RunRequest(repo=str(repo), clone_url=str(repo), ref="main")
    data = StageInput("run-infra", request, "", stage, [], 30, max_infra_retries=retries)
    return activities, await ActivityEnvironment().run(activities.run_stage, data)


@pytest.fixture
def repo(git_repo: Callable[..., Path]) -> Path:
    return git_repo({"t.yaml": "run: x\n"})


async def test_a_lost_cluster_is_downed_and_the_stage_relaunched(
    settings: Settings, repo: Path
) -> None:
    backend = FlakyInfra(failures=1)
    before = infra_count(InfraCause.LOST, "recovered")

    _, output = await run_stage(settings, repo, backend)

    assert output.exit_code == 0  # type: ignore[attr-defined]
    assert output.infra_recoveries == ["lost"]  # type: ignore[attr-defined]
    assert backend.runs == [True, True]
    assert backend.downs == ["sr-r-train"]
    log = (settings.logs_dir / "run-infra" / "train.log").read_text()
    assert "infrastructure failure (the cluster was preempted or lost)" in log
    assert "relaunching cluster train (1 of max_infra_retries 2" in log
    assert infra_count(InfraCause.LOST, "recovered") == before + 1


async def test_an_exec_stage_whose_cluster_was_lost_relaunches_it(
    settings: Settings, repo: Path
) -> None:
    backend = FlakyInfra(failures=1)

    await run_stage(settings, repo, backend, launch=False)

    assert backend.runs == [False, True]
    log = (settings.logs_dir / "run-infra" / "train.log").read_text()
    assert "files earlier stages left on it are gone" in log


async def test_past_max_infra_retries_the_stage_fails_naming_the_cause(
    settings: Settings, repo: Path
) -> None:
    backend = FlakyInfra(failures=10, cause=InfraCause.CAPACITY)
    before = infra_count(InfraCause.CAPACITY, "gave_up")

    with pytest.raises(ApplicationError) as caught:
        await run_stage(settings, repo, backend, retries=2)

    assert backend.runs == [True, True, True]
    assert caught.value.type == USER_ERROR and caught.value.non_retryable
    assert "failed on the infrastructure, not in its job" in caught.value.message
    assert "no capacity or quota" in caught.value.message
    assert "2 relaunches did not help" in caught.value.message
    assert "exit status" not in caught.value.message
    assert infra_count(InfraCause.CAPACITY, "gave_up") == before + 1


async def test_with_max_infra_retries_0_nothing_is_relaunched(
    settings: Settings, repo: Path
) -> None:
    backend = FlakyInfra(failures=1)

    with pytest.raises(ApplicationError, match="max_infra_retries is 0"):
        await run_stage(settings, repo, backend, retries=0)

    assert backend.runs == [True]
    assert backend.downs == []


async def test_a_job_that_fails_is_never_retried(settings: Settings, repo: Path) -> None:
    backend = FlakyInfra(failures=0, code=EXIT_FAILED)

    _, output = await run_stage(settings, repo, backend)

    assert output.exit_code == EXIT_FAILED  # type: ignore[attr-defined]
    assert output.infra_recoveries == []  # type: ignore[attr-defined]
    assert backend.runs == [True]
    assert backend.downs == []


@pytest.mark.parametrize("managed", [True, False])
async def test_the_stage_s_managed_key_reaches_the_backend(
    settings: Settings, repo: Path, managed: bool
) -> None:
    backend = FlakyInfra(failures=0)

    await run_stage(settings, repo, backend, managed=managed)

    assert [task.managed for task in backend.tasks] == [managed]


async def test_a_managed_job_without_capacity_is_relaunched_as_an_infrastructure_failure(
    settings: Settings, repo: Path
) -> None:
    fake = FakeSky()
    fake.jobs.states = [ManagedJobStatus.FAILED_NO_RESOURCE]  # the first job, then SUCCEEDED
    fake.jobs.failure_reason = "Failed to acquire resources in all zones"
    backend = SkyPilotBackend(sdk=fake, managed_poll_seconds=0.01)

    _, output = await run_stage(settings, repo, backend, managed=True)

    assert output.exit_code == 0  # type: ignore[attr-defined]
    assert output.infra_recoveries == ["capacity"]  # type: ignore[attr-defined]
    assert len(fake.named("jobs.launch")) == 2
    assert fake.jobs.live() == []
    log = (settings.logs_dir / "run-infra" / "train.log").read_text()
    assert "FAILED_NO_RESOURCE" in log and "relaunching cluster train (1 of" in log
