"""`managed: true` stages on the SkyPilot backend (worker/backends/skypilot.py): a managed job
launched, followed, mapped from its final state, cancelled; against the recording fake SDK."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import requests
from sky import exceptions
from sky.jobs import ManagedJobStatus

from tests.worker.backends.fake_sky import FakeSky
from worker.backends.base import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    BackendError,
    InfraError,
    TaskRun,
    TaskSpecError,
)
from worker.backends.skypilot import (
    EXIT_MARKER,
    LOG_CANCELLING,
    LOG_MANAGED_STARTED,
    SkyPilotBackend,
)
from worker.contract import InfraCause

NAME = "sr-run1-train"
TASK_YAML = """\
name: train
envs:
  API_TOKEN: tok-very-secret
setup: pip install -r requirements.txt
run: python train.py
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "train.py").write_text("print('hi')\n")
    return root


@pytest.fixture
def fake() -> FakeSky:
    return FakeSky()


@pytest.fixture
def backend(fake: FakeSky) -> SkyPilotBackend:
    return SkyPilotBackend(
        sdk=fake, managed_poll_seconds=0.01, managed_settle_seconds=1.0, managed_cancel_seconds=1.0
    )


def managed_run(checkout: Path, **overrides: Any) -> TaskRun:
    fields: dict[str, Any] = {
        "run_id": "run1",
        "stage": "train",
        "cluster_name": NAME,
        "task_yaml": TASK_YAML,
        "envs": {"DATA_BUCKET_URL": "s3://bucket"},
        "checkout_dir": checkout,
        "launch": True,
        "managed": True,
    }
    fields.update(overrides)
    return TaskRun(**fields)


async def run_logged(backend: SkyPilotBackend, task: TaskRun) -> tuple[int, str]:
    log = io.BytesIO()
    code = await backend.run(task, log)
    return code, log.getvalue().decode()


# -- launching and following ----------------------------------------------------------------------


async def test_a_managed_stage_is_launched_as_a_managed_job_and_followed(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    code, log = await run_logged(backend, managed_run(checkout))

    assert code == EXIT_SUCCEEDED
    assert "launch" not in fake.names() and "exec" not in fake.names()
    (launch,) = fake.named("jobs.launch")
    assert launch.kwargs["name"] == NAME
    task = launch.args[0]
    assert task.envs["DATA_BUCKET_URL"] == "s3://bucket"
    assert EXIT_MARKER in task.run  # the task's own exit status is printed, as for other stages
    (job_id,) = fake.jobs.jobs
    (tail,) = fake.named("jobs.tail_logs")
    assert tail.kwargs["job_id"] == job_id and tail.kwargs["follow"] is True
    assert LOG_MANAGED_STARTED.format(job_id=job_id, name=NAME) in log
    assert "(train, pid=1) training" in log
    assert f"managed job {job_id} ended SUCCEEDED" in log
    assert fake.jobs.live() == []
    assert fake.named("jobs.cancel") == []


async def test_recoveries_by_the_jobs_controller_are_shown_in_the_log(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.recovery_count = 2

    code, log = await run_logged(backend, managed_run(checkout))

    assert code == EXIT_SUCCEEDED
    assert "after 2 recoveries by the jobs controller" in log


async def test_a_final_state_recorded_after_the_log_ends_is_waited_for(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED
    fake.jobs.states = [ManagedJobStatus.RUNNING, ManagedJobStatus.CANCELLING]

    code, _ = await run_logged(backend, managed_run(checkout))

    assert code == EXIT_FAILED
    assert len(fake.named("jobs.queue_v2")) == 3


async def test_a_job_that_never_reaches_a_final_state_is_cancelled_and_reported(
    fake: FakeSky, checkout: Path
) -> None:
    backend = SkyPilotBackend(
        sdk=fake, managed_poll_seconds=0.01, managed_settle_seconds=0.2, managed_cancel_seconds=1.0
    )
    fake.jobs.states = [ManagedJobStatus.RUNNING] * 1000

    with pytest.raises(BackendError, match=r"still RUNNING .* it was cancelled") as caught:
        await run_logged(backend, managed_run(checkout))

    assert not isinstance(caught.value, InfraError)
    assert fake.jobs.live() == []
    (cancel,) = fake.named("jobs.cancel")
    assert cancel.kwargs["job_ids"] == list(fake.jobs.jobs)


async def test_a_launch_that_returns_no_job_id_is_a_backend_error(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.launch_ids = []

    with pytest.raises(BackendError, match="returned no job id"):
        await run_logged(backend, managed_run(checkout))


# -- final states ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (ManagedJobStatus.SUCCEEDED, EXIT_SUCCEEDED),
        (ManagedJobStatus.FAILED, EXIT_FAILED),
        (ManagedJobStatus.FAILED_SETUP, EXIT_FAILED),
        (ManagedJobStatus.CANCELLED, EXIT_CANCELLED),
    ],
)
async def test_final_states_that_are_the_jobs_own_become_its_exit_status(
    backend: SkyPilotBackend,
    fake: FakeSky,
    checkout: Path,
    final: ManagedJobStatus,
    expected: int,
) -> None:
    fake.jobs.final = final

    code, log = await run_logged(backend, managed_run(checkout))

    assert code == expected
    assert f"ended {final.value}" in log
    assert fake.jobs.live() == []


async def test_a_failed_job_reports_the_tasks_own_exit_status(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED
    fake.jobs.tail_code = 100
    fake.jobs.job_output = f"(train, pid=1) boom\n(train, pid=1) {EXIT_MARKER} 3\n"

    code, _ = await run_logged(backend, managed_run(checkout))

    assert code == 3


async def test_a_printed_status_never_turns_a_failed_setup_into_a_success(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED_SETUP
    fake.jobs.failure_reason = "setup exited with 1"
    fake.jobs.job_output = f"(setup pid=1) no requirements.txt\n{EXIT_MARKER} 0\n"

    code, log = await run_logged(backend, managed_run(checkout))

    assert code == EXIT_FAILED
    assert "its setup failed (FAILED_SETUP), so its run commands never started" in log
    assert "fix the task's `setup:`" in log and "setup exited with 1" in log


async def test_no_resource_is_an_infrastructure_failure_for_the_retry_path(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED_NO_RESOURCE
    fake.jobs.failure_reason = "Failed to acquire resources in all zones"

    with pytest.raises(InfraError) as caught:
        await run_logged(backend, managed_run(checkout))

    assert caught.value.cause is InfraCause.CAPACITY
    assert "FAILED_NO_RESOURCE" in str(caught.value)
    assert "Failed to acquire resources in all zones" in str(caught.value)
    assert fake.named("jobs.cancel") == []  # it ended: nothing to stop


async def test_failed_prechecks_are_the_tasks_error(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED_PRECHECKS
    fake.jobs.failure_reason = "No launchable resource found for A100:64"

    with pytest.raises(TaskSpecError, match=r"FAILED_PRECHECKS.*A100:64"):
        await run_logged(backend, managed_run(checkout))


async def test_a_failed_controller_is_skypilots_failure_not_the_tasks(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED_CONTROLLER

    with pytest.raises(BackendError, match=r"jobs controller failed.*SkyPilot gave no reason") as e:
        await run_logged(backend, managed_run(checkout))

    assert not isinstance(e.value, InfraError)


async def test_secrets_in_the_failure_reason_are_masked(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.final = ManagedJobStatus.FAILED_NO_RESOURCE
    fake.jobs.failure_reason = "\x1b[31mquota\x1b[0m for token tok-very-secret exceeded"

    with pytest.raises(InfraError) as caught:
        await run_logged(backend, managed_run(checkout))

    assert "tok-very-secret" not in str(caught.value) and "\x1b" not in str(caught.value)
    assert "quota for token *** exceeded" in str(caught.value)


# -- broken streams and errors --------------------------------------------------------------------


async def test_a_broken_log_stream_of_a_finished_job_still_maps_its_state(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.tail_error = requests.exceptions.ChunkedEncodingError("connection reset")
    fake.jobs.states = [ManagedJobStatus.FAILED] * 2  # what the queue says of it after the break

    code, log = await run_logged(backend, managed_run(checkout))

    assert code == EXIT_FAILED
    assert "log stream of managed job" in log and "connection reset" in log


async def test_a_broken_log_stream_of_a_running_job_cancels_it_and_is_infrastructure(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.tail_error = requests.exceptions.ChunkedEncodingError("connection reset")

    with pytest.raises(InfraError) as caught:
        await run_logged(backend, managed_run(checkout))

    assert caught.value.cause is InfraCause.CONNECTION
    assert "while it was RUNNING" in str(caught.value)
    assert fake.jobs.live() == []  # a relaunch starts clean


async def test_a_lost_api_server_connection_while_launching_is_infrastructure(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.request_error = exceptions.ApiServerConnectionError("http://u:pw@api:46580")

    with pytest.raises(InfraError) as caught:
        await run_logged(backend, managed_run(checkout))

    assert caught.value.cause is InfraCause.CONNECTION
    assert "pw@" not in str(caught.value)


async def test_a_bad_task_fails_before_anything_is_sent(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    with pytest.raises(TaskSpecError):
        await run_logged(backend, managed_run(checkout, task_yaml="run: [1, 2\n"))

    assert fake.calls == []


# -- cancellation and down ------------------------------------------------------------------------


async def test_cancel_while_the_job_runs_cancels_the_managed_job_and_waits(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.block = "job"
    log = io.BytesIO()
    running = asyncio.create_task(backend.run(managed_run(checkout), log))
    assert await asyncio.to_thread(fake.blocked.wait, 5)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    (job_id,) = fake.jobs.jobs
    (cancel,) = fake.named("jobs.cancel")
    assert cancel.kwargs["job_ids"] == [job_id]
    assert fake.jobs.jobs[job_id]["status"] is ManagedJobStatus.CANCELLED
    after_cancel = fake.names()[fake.names().index("jobs.cancel") :]
    assert "jobs.queue_v2" in after_cancel  # it waited for the job to end
    assert LOG_CANCELLING in log.getvalue().decode()


async def test_cancel_during_the_launch_cancels_the_request_and_any_job_it_created(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.jobs.block = "launch"
    # What the server created before the request was cancelled, and another run's job.
    fake.jobs.jobs[3] = {"job_name": NAME, "status": ManagedJobStatus.STARTING}
    fake.jobs.jobs[4] = {"job_name": f"{NAME}-other", "status": ManagedJobStatus.RUNNING}
    running = asyncio.create_task(backend.run(managed_run(checkout), io.BytesIO()))
    assert await asyncio.to_thread(fake.blocked.wait, 5)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert "api_cancel" in fake.names()
    (cancel,) = fake.named("jobs.cancel")
    assert cancel.kwargs["job_ids"] == [3]
    assert fake.jobs.live() == [4]


async def test_down_of_a_managed_stage_cancels_its_job_still_running(
    backend: SkyPilotBackend, fake: FakeSky
) -> None:
    fake.jobs.jobs[5] = {"job_name": NAME, "status": ManagedJobStatus.RECOVERING}
    fake.jobs.jobs[6] = {"job_name": NAME, "status": ManagedJobStatus.FAILED_NO_RESOURCE}

    await backend.down(NAME)

    assert fake.named("down")[0].args == (NAME,)
    (cancel,) = fake.named("jobs.cancel")
    assert cancel.kwargs["job_ids"] == [5]
    assert fake.jobs.live() == []


async def test_down_after_a_managed_stage_ended_cancels_nothing(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    await run_logged(backend, managed_run(checkout))

    await backend.down(NAME)

    assert fake.named("jobs.cancel") == []


async def test_down_of_an_ordinary_cluster_does_not_ask_the_jobs_queue(
    backend: SkyPilotBackend, fake: FakeSky
) -> None:
    fake.clusters.add(NAME)

    await backend.down(NAME)

    assert not [name for name in fake.names() if name.startswith("jobs.")]


async def test_down_without_a_jobs_controller_is_fine(
    backend: SkyPilotBackend, fake: FakeSky
) -> None:
    fake.jobs.queue_error = exceptions.ClusterNotUpError("jobs controller is not up")

    await backend.down(NAME)


async def test_down_of_a_managed_stage_that_cannot_see_the_jobs_queue_fails_to_be_retried(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    await run_logged(backend, managed_run(checkout))
    fake.jobs.queue_error = RuntimeError("Failed to get request: 502")

    with pytest.raises(BackendError, match=r"could not look up managed jobs named .*502"):
        await backend.down(NAME)

    fake.jobs.queue_error = None
    await backend.down(NAME)  # the retry


async def test_down_of_a_vanished_cluster_of_unknown_kind_only_logs_a_queue_failure(
    backend: SkyPilotBackend, fake: FakeSky, caplog: pytest.LogCaptureFixture
) -> None:
    fake.jobs.queue_error = RuntimeError("Failed to get request: 502")

    await backend.down("sr-other-worker-or-ordinary")

    assert "could not look up managed jobs named sr-other-worker-or-ordinary" in caplog.text


async def test_down_of_a_managed_job_that_does_not_stop_says_how_to_stop_it(
    backend: SkyPilotBackend, fake: FakeSky
) -> None:
    fake.jobs.jobs[5] = {"job_name": NAME, "status": ManagedJobStatus.RUNNING}
    fake.jobs.stuck = True

    with pytest.raises(BackendError, match=r"did not stop within 1 s.*sky jobs cancel 5"):
        await backend.down(NAME)
