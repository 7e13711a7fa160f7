from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sky
from sky import exceptions
from sky.skylet.job_lib import JobStatus

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
    LOG_NO_JOB,
    LOG_SETUP_JOB,
    MSG_MISSING_ENVS,
    SkyPilotBackend,
    resolve_local_paths,
    wrap_run,
)
from worker.contract import InfraCause
from worker.limits import MAX_ERROR_CHARS

REPO_ROOT = Path(__file__).resolve().parents[3]
# Set to skip the test against a real local SkyPilot API server (it takes about a minute).
SKIP_SERVER_ENV = "SKYRUN_SKIP_SKYPILOT_SERVER_TEST"
CLUSTER = "sr-run1-train"

TASK_YAML = """\
name: train
workdir: .
envs:
  EPOCHS: "1"
  DATA_BUCKET_URL:
file_mounts:
  /data: data
  /conf/c.yaml: ./conf/c.yaml
  /remote: s3://some-bucket/path
run: python train.py --epochs $EPOCHS
"""


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "checkout"
    (root / "data").mkdir(parents=True)
    (root / "conf").mkdir()
    (root / "conf" / "c.yaml").write_text("a: 1\n")
    (root / "train.py").write_text("print('hi')\n")
    # The worker's cwd is somewhere else entirely: relative paths must not resolve against it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


@pytest.fixture
def fake() -> FakeSky:
    return FakeSky()


@pytest.fixture
def backend(fake: FakeSky) -> SkyPilotBackend:
    return SkyPilotBackend(sdk=fake)


def make_run(checkout: Path, **overrides: Any) -> TaskRun:
    fields: dict[str, Any] = {
        "run_id": "run1",
        "stage": "train",
        "cluster_name": CLUSTER,
        "task_yaml": TASK_YAML,
        "envs": {"DATA_BUCKET_URL": "s3://bucket", "EXTRA": "x"},
        "checkout_dir": checkout,
        "launch": True,
        "autostop_minutes": 17,
    }
    fields.update(overrides)
    return TaskRun(**fields)


async def run_until_blocked(
    backend: SkyPilotBackend, fake: FakeSky, task: TaskRun, log: io.BytesIO
) -> asyncio.Task[int]:
    running = asyncio.create_task(backend.run(task, log))
    assert await asyncio.to_thread(fake.blocked.wait, 5)
    return running


# -- launch / exec ---------------------------------------------------------------------------------


async def test_launch_puts_envs_on_the_task_and_sets_autostop_with_down(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    code = await backend.run(make_run(checkout), io.BytesIO())

    assert code == EXIT_SUCCEEDED
    (launch,) = fake.named("launch")
    task = launch.args[0]
    assert task.envs == {"EPOCHS": "1", "DATA_BUCKET_URL": "s3://bucket", "EXTRA": "x"}
    assert "envs" not in launch.kwargs
    assert launch.kwargs["cluster_name"] == CLUSTER
    assert launch.kwargs["idle_minutes_to_autostop"] == 17
    assert launch.kwargs["down"] is True
    assert launch.kwargs["_need_confirmation"] is False
    assert launch.kwargs["retry_until_up"] is False
    assert fake.named("exec") == []


async def test_relative_workdir_and_mounts_resolve_against_the_checkout(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    await backend.run(make_run(checkout), io.BytesIO())

    task = fake.named("launch")[0].args[0]
    assert task.workdir == str(checkout)
    assert task.file_mounts == {
        "/data": str(checkout / "data"),
        "/conf/c.yaml": str(checkout / "conf" / "c.yaml"),
        "/remote": "s3://some-bucket/path",
    }


async def test_workdir_from_an_env_resolves_against_the_checkout(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    task_yaml = "workdir: $SUB\nrun: ls\n"
    await backend.run(make_run(checkout, task_yaml=task_yaml, envs={"SUB": "data"}), io.BytesIO())

    assert fake.named("launch")[0].args[0].workdir == str(checkout / "data")


def test_resolve_local_paths_rewrites_storage_sources_and_leaves_urls(tmp_path: Path) -> None:
    config = {
        "workdir": "src",
        "file_mounts": {
            "/a": "../checkout/x",
            "/b": "/abs/path",
            "/c": "~/home/file",
            "/d": "${DIR}/file",
            "/e": {"name": "bkt", "source": "data", "mode": "COPY"},
            "/f": {"source": ["data", "gs://b/c"]},
            "/g": {"source": "s3://bucket"},
            "/h": {"name": "scratch", "mode": "MOUNT"},
        },
        "run": "true",
    }

    resolved = resolve_local_paths(config, tmp_path)

    assert resolved["workdir"] == str(tmp_path / "src")
    assert resolved["file_mounts"] == {
        "/a": os.path.normpath(tmp_path / "../checkout/x"),
        "/b": "/abs/path",
        "/c": "~/home/file",
        "/d": "${DIR}/file",
        "/e": {"name": "bkt", "source": str(tmp_path / "data"), "mode": "COPY"},
        "/f": {"source": [str(tmp_path / "data"), "gs://b/c"]},
        "/g": {"source": "s3://bucket"},
        "/h": {"name": "scratch", "mode": "MOUNT"},
    }
    assert config["workdir"] == "src", "the input is not modified"


async def test_exec_runs_on_the_shared_cluster_without_launching(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    await backend.run(make_run(checkout), io.BytesIO())
    log = io.BytesIO()

    code = await backend.run(make_run(checkout, stage="eval", launch=False), log)

    assert code == EXIT_SUCCEEDED
    assert len(fake.named("launch")) == 1
    (exec_call,) = fake.named("exec")
    assert exec_call.kwargs == {"cluster_name": CLUSTER}
    assert exec_call.args[0].envs["EXTRA"] == "x"
    assert f"running on cluster {CLUSTER}" in log.getvalue().decode()


@pytest.mark.parametrize("exit_code", [EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED])
async def test_the_jobs_exit_code_is_returned_not_raised(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path, exit_code: int
) -> None:
    fake.exit_code = exit_code

    assert await backend.run(make_run(checkout), io.BytesIO()) == exit_code
    (tail,) = fake.named("tail_logs")
    assert tail.args == (CLUSTER, 1, True)


async def test_request_and_job_output_go_into_the_log_without_colours(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    log = io.BytesIO()
    fake.job_output = "(task, pid=7) héllo \x1b[32mgreen\x1b[0m\n::metric accuracy=0.9\n"

    await backend.run(make_run(checkout), log)

    text = log.getvalue().decode("utf-8")
    request_id = fake.named("stream_and_get")[0].args[0]
    assert f"launching cluster {CLUSTER} (SkyPilot request {request_id})" in text
    assert "Launching provisioning logs\n" in text
    assert "(task, pid=7) héllo green\n::metric accuracy=0.9\n" in text
    assert "\x1b" not in text


async def test_a_task_without_run_commands_has_no_job_to_follow(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.job_id = None
    log = io.BytesIO()

    assert await backend.run(make_run(checkout), log) == EXIT_SUCCEEDED
    assert fake.named("tail_logs") == []
    assert LOG_NO_JOB in log.getvalue().decode()


async def test_provisioning_ahead_launches_without_run_and_follows_the_setup_job(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    """`prelaunch`: a launch with the task's setup and no `run`; SkyPilot runs the setup as a
    job of its own, whose exit status is the provisioning's; the stage's job has not begun."""
    fake.job_id, fake.exit_code = 4, 7
    started: list[str] = []
    task = make_run(
        checkout,
        task_yaml=TASK_YAML + "setup: pip install -r requirements.txt\n",
        provision_only=True,
        job_started=lambda: started.append("job"),
        setup_started=lambda: started.append("setup"),
    )
    log = io.BytesIO()

    assert await backend.run(task, log) == 7
    (launch,) = fake.named("launch")
    assert launch.args[0].run is None and launch.args[0].setup
    assert LOG_SETUP_JOB.format(cluster=CLUSTER, job_id=4) in log.getvalue().decode()
    assert started == ["setup"]  # its job is the stage's, later


async def test_provisioning_a_task_without_setup_ends_with_the_launch(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.job_id = None
    log = io.BytesIO()

    assert await backend.run(make_run(checkout, provision_only=True), log) == EXIT_SUCCEEDED
    assert fake.named("tail_logs") == []
    assert LOG_NO_JOB not in log.getvalue().decode()


# -- cancellation ----------------------------------------------------------------------------------


async def test_cancel_during_launch_cancels_the_request_and_reraises(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.block = "request"
    log = io.BytesIO()
    running = await run_until_blocked(backend, fake, make_run(checkout), log)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    launch_request = fake.named("stream_and_get")[0].args[0]
    (api_cancel,) = fake.named("api_cancel")
    assert api_cancel.args == (launch_request,)
    assert fake.named("cancel") == [], "no job was submitted yet"
    assert LOG_CANCELLING in log.getvalue().decode()


async def test_cancel_while_the_job_runs_cancels_the_job(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.block = "job"
    running = await run_until_blocked(backend, fake, make_run(checkout), io.BytesIO())

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    (cancel,) = fake.named("cancel")
    assert cancel.args == (CLUSTER,)
    assert cancel.kwargs == {"job_ids": [1]}
    assert fake.named("api_cancel") == [], "the launch request had already finished"


async def test_cancel_while_submitting_still_cancels_the_request_it_created(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.submit_delay = 0.5
    running = asyncio.create_task(backend.run(make_run(checkout), io.BytesIO()))
    # Cancel while the launch is being submitted (a loaded machine may take a while to get there).
    for _ in range(500):
        if fake.named("launch"):
            break
        await asyncio.sleep(0.01)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    (api_cancel,) = fake.named("api_cancel")
    assert api_cancel.args[0].endswith("-launch")
    assert fake.named("stream_and_get") == []


async def test_errors_while_cancelling_are_swallowed(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.block = "request"
    fake.api_cancel_error = requests.ConnectionError("server gone")
    running = await run_until_blocked(backend, fake, make_run(checkout), io.BytesIO())

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert len(fake.named("api_cancel")) == 1


async def test_no_writes_into_the_log_after_run_returns(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.block = "request"
    log = io.BytesIO()
    running = await run_until_blocked(backend, fake, make_run(checkout), log)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    log.close()  # a lingering SDK thread must not write into a log the caller closed

    stream = fake.named("stream_and_get")[0].kwargs["output_stream"]
    stream.write("late line\n")


# -- down ------------------------------------------------------------------------------------------


async def test_down_tears_the_cluster_down(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    await backend.run(make_run(checkout), io.BytesIO())

    await backend.down(CLUSTER)

    assert fake.named("down")[0].args == (CLUSTER,)
    assert CLUSTER not in fake.clusters


async def test_down_of_a_missing_cluster_is_fine(backend: SkyPilotBackend, fake: FakeSky) -> None:
    await backend.down("sr-never-launched")

    assert len(fake.named("down")) == 1


async def test_down_failure_is_a_backend_error(backend: SkyPilotBackend, fake: FakeSky) -> None:
    fake.clusters.add(CLUSTER)
    fake.down_error = exceptions.CloudError("quota API timed out", "aws", "Throttling")

    with pytest.raises(BackendError, match="quota API timed out"):
        await backend.down(CLUSTER)


async def test_down_cancels_a_launch_still_in_flight(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.block = "request"
    running = await run_until_blocked(backend, fake, make_run(checkout), io.BytesIO())

    await backend.down(CLUSTER)

    assert fake.names().index("api_cancel") < fake.names().index("down")
    with pytest.raises(BackendError):  # the launch request reports it was cancelled
        await running


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected", "fragment"),
    [
        (
            exceptions.NoCloudAccessError(
                "Cloud access is not set up. Run: \x1b[1msky check\x1b[0m"
            ),
            TaskSpecError,
            "Run: sky check",
        ),
        (
            exceptions.ResourcesUnavailableError("No launchable resource found for task"),
            TaskSpecError,
            "No launchable resource found",
        ),
        (
            exceptions.ResourcesUnavailableError(
                "Failed to acquire resources in all zones",
                failover_history=[RuntimeError("InsufficientInstanceCapacity")],
            ),
            BackendError,
            "Failed to acquire resources in all zones",
        ),
        (exceptions.KubeAPIUnreachableError("k8s API down"), BackendError, "k8s API down"),
        (exceptions.InvalidSkyPilotConfigError("Invalid task YAML: x"), TaskSpecError, "x"),
        (exceptions.ResourcesMismatchError("needs 8 GPUs"), TaskSpecError, "needs 8 GPUs"),
        (ValueError("Invalid accelerator NOPE"), TaskSpecError, "Invalid accelerator NOPE"),
        (exceptions.RequestCancelled("cancelled by another process"), BackendError, "another"),
        (
            exceptions.ClusterNotUpError("cluster is INIT"),
            BackendError,
            f"Cluster {CLUSTER} is not up",
        ),
        (RuntimeError("Failed to get request: 502"), BackendError, "502"),
        (Exception("CustomCloudError: boom"), BackendError, "CustomCloudError: boom"),
    ],
)
async def test_server_errors_are_mapped_with_their_message(
    backend: SkyPilotBackend,
    fake: FakeSky,
    checkout: Path,
    error: Exception,
    expected: type[Exception],
    fragment: str,
) -> None:
    fake.request_error = error

    with pytest.raises(expected) as caught:
        await backend.run(make_run(checkout), io.BytesIO())

    assert fragment in str(caught.value)
    assert "\x1b" not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_unreachable_api_server_is_a_backend_error_without_its_password(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.submit_error = exceptions.ApiServerConnectionError("http://admin:hunter22@sky:46580")

    with pytest.raises(BackendError) as caught:
        await backend.run(make_run(checkout), io.BytesIO())

    assert "Could not connect to SkyPilot API server" in str(caught.value)
    assert "hunter22" not in str(caught.value)


async def test_exec_on_a_missing_cluster_names_the_cluster(
    backend: SkyPilotBackend, checkout: Path
) -> None:
    with pytest.raises(BackendError, match=f"Cluster {CLUSTER} is not up.*does not exist"):
        await backend.run(make_run(checkout, launch=False), io.BytesIO())


async def test_secret_values_are_kept_out_of_errors(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.request_error = ValueError("bad value hf_abcdef123 for HF_TOKEN")
    task = make_run(checkout, envs={"HF_TOKEN": "hf_abcdef123", "DATA_BUCKET_URL": ""})

    with pytest.raises(TaskSpecError) as caught:
        await backend.run(task, io.BytesIO())

    assert "hf_abcdef123" not in str(caught.value)
    assert "bad value *** for HF_TOKEN" in str(caught.value)


async def test_a_megabyte_server_validation_error_is_bounded_and_names_the_field(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    # What a YAML bomb made SkyPilot say: megabytes of the expanded value, then the field.
    huge = "[" + "['lol', 'lol', 'lol'], " * 200_000 + "]"
    fake.request_error = exceptions.InvalidSkyPilotConfigError(
        f"Invalid task YAML: {huge} is not of type 'string'. Check problematic field(s): $.run"
    )
    log = io.BytesIO()

    with pytest.raises(TaskSpecError) as caught:
        await backend.run(make_run(checkout), log)

    message = str(caught.value)
    assert len(huge) > 4_000_000
    assert len(message) <= MAX_ERROR_CHARS
    assert message.startswith(
        "SkyPilot rejected the task: InvalidSkyPilotConfigError: field `run`: Invalid task YAML: "
    )
    assert message.endswith("is not of type 'string'")
    assert "characters left out" in message


async def test_a_megabyte_backend_error_is_bounded(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.request_error = RuntimeError("provisioning failed: " + "x" * 3_000_000 + " (quota)")

    with pytest.raises(BackendError) as caught:
        await backend.run(make_run(checkout), io.BytesIO())

    assert len(str(caught.value)) <= MAX_ERROR_CHARS
    assert str(caught.value).startswith(
        f"SkyPilot failed to launch cluster {CLUSTER}: provisioning"
    )
    assert str(caught.value).endswith("x (quota)")


async def test_a_long_secret_is_masked_before_the_message_is_cut(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    secret = "hf_" + "s" * 5000
    fake.request_error = ValueError(f"bad token {secret} rejected")
    task = make_run(checkout, envs={"HF_TOKEN": secret, "DATA_BUCKET_URL": ""})

    with pytest.raises(TaskSpecError) as caught:
        await backend.run(task, io.BytesIO())

    assert str(caught.value) == "SkyPilot rejected the task: ValueError: bad token *** rejected"


async def test_validation_errors_of_a_large_task_name_the_field_and_stay_bounded(
    backend: SkyPilotBackend, checkout: Path
) -> None:
    task_yaml = "run: [" + ",".join(["[1, 2, 3]"] * 5000) + "]\n"

    with pytest.raises(TaskSpecError) as caught:
        await backend.validate(task_yaml, {}, checkout)

    message = str(caught.value)
    assert message.startswith("SkyPilot rejected the task: InvalidSkyPilotConfigError: field `run`")
    assert len(message) <= MAX_ERROR_CHARS


async def test_losing_the_job_stream_cancels_the_job_so_a_retry_starts_clean(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.tail_error = requests.ConnectionError("connection reset")

    with pytest.raises(BackendError, match="connection reset"):
        await backend.run(make_run(checkout), io.BytesIO())

    assert fake.named("cancel")[0].kwargs == {"job_ids": [1]}


async def test_a_required_env_without_value_fails_before_anything_is_sent(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    with pytest.raises(TaskSpecError) as caught:
        await backend.run(make_run(checkout, envs={}), io.BytesIO())

    assert str(caught.value) == MSG_MISSING_ENVS.format(names="DATA_BUCKET_URL")
    assert fake.calls == []


# -- validate (real SkyPilot parsing) ------------------------------------------------------------


async def test_validate_accepts_a_good_task(backend: SkyPilotBackend, checkout: Path) -> None:
    await backend.validate(TASK_YAML, {"DATA_BUCKET_URL": ""}, checkout)


@pytest.mark.parametrize(
    ("task_yaml", "fragment"),
    [
        ("run: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("resource:\n  cpus: 2\n", "did you mean 'resources'"),
        ("resources:\n  cpus: lots\n", '"cpus" field should be'),
        ("resources:\n  infra: nocloud\n", "Invalid resources YAML"),
        ("envs:\n  TOKEN:\nrun: echo\n", "needs a value for TOKEN"),
        ("num_nodes: many\n", "'many' is not of type 'integer'"),
        ("workdir: missing-dir\n", "missing-dir not found"),
        ("file_mounts:\n  /x: no-such-file\n", "does not exist locally"),
        ("workdir: ..\n", "outside the repository"),
        ("file_mounts:\n  /keys: ~/.ssh\n", "outside the repository"),
        ("file_mounts:\n  /etc: /etc/passwd\n", "outside the repository"),
    ],
)
async def test_validate_rejects_bad_tasks_naming_the_problem(
    backend: SkyPilotBackend, checkout: Path, task_yaml: str, fragment: str
) -> None:
    with pytest.raises(TaskSpecError) as caught:
        await backend.validate(task_yaml, {}, checkout)

    assert fragment in str(caught.value)


async def test_validate_rejects_a_symlink_out_of_the_checkout(
    backend: SkyPilotBackend, checkout: Path, tmp_path: Path
) -> None:
    (checkout / "escape").symlink_to(tmp_path)

    with pytest.raises(TaskSpecError, match="outside the repository"):
        await backend.validate("workdir: escape\n", {}, checkout)


async def test_validate_with_the_required_env_given(
    backend: SkyPilotBackend, checkout: Path
) -> None:
    await backend.validate("envs:\n  TOKEN:\nrun: echo $TOKEN\n", {"TOKEN": "t"}, checkout)


# -- small things ----------------------------------------------------------------------------------


def test_dashboard_url() -> None:
    assert SkyPilotBackend().dashboard_url() == ""
    backend = SkyPilotBackend("http://admin:pw@sky.example:46580/")
    assert backend.dashboard_url() == "http://sky.example:46580/dashboard"


def test_cluster_names_up_lists_only_skyrun_clusters(
    backend: SkyPilotBackend, fake: FakeSky
) -> None:
    fake.clusters |= {"sr-run1-train", "sr-run2-eval", "someone-elses"}

    assert backend.cluster_names_up() == ["sr-run1-train", "sr-run2-eval"]
    assert fake.named("status")[0].kwargs == {"all_users": True}


def test_importing_the_backend_does_not_import_sky() -> None:
    code = (
        "import sys; from worker.backends.skypilot import SkyPilotBackend; "
        "b = SkyPilotBackend('http://x:1'); b.dashboard_url(); "
        "assert 'sky' not in sys.modules, 'sky imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# -- against a real local SkyPilot API server (no cloud enabled) ---------------------------------

REAL_SERVER_SCRIPT = """
import asyncio, io, json, logging, sys
from pathlib import Path
from worker.backends.base import BackendError, TaskRun, TaskSpecError
from worker.backends.skypilot import SkyPilotBackend

warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("worker.backends.skypilot").addHandler(handler)

async def main(endpoint: str, checkout: str) -> None:
    backend = SkyPilotBackend(api_server_endpoint=endpoint)
    task = TaskRun(run_id="t1", stage="s", cluster_name="sr-t1-nocloud",
                   task_yaml="run: echo hi\\n", envs={"A": "b"},
                   checkout_dir=Path(checkout), launch=True, autostop_minutes=5)
    out = {}
    try:
        out["run"] = ["returned", await asyncio.wait_for(backend.run(task, io.BytesIO()), 90)]
    except (TaskSpecError, BackendError) as exc:
        out["run"] = [type(exc).__name__, str(exc)]
    # Cancelling mid-launch must reach the server (api_cancel) and come back promptly.
    running = asyncio.create_task(backend.run(task, io.BytesIO()))
    await asyncio.sleep(1.0)
    running.cancel()
    try:
        await asyncio.wait_for(running, 90)
        out["cancel"] = "not cancelled"
    except asyncio.CancelledError:
        out["cancel"] = "cancelled"
    except (TaskSpecError, BackendError) as exc:
        out["cancel"] = f"finished first: {exc}"
    await asyncio.wait_for(backend.down("sr-t1-nocloud"), 60)
    out["clusters"] = await asyncio.to_thread(backend.cluster_names_up)
    out["warnings"] = warnings
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def local_api_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str]]]:
    """A SkyPilot API server in a throwaway HOME on a free port; skips if it cannot start."""
    if os.environ.get(SKIP_SERVER_ENV):
        pytest.skip(f"{SKIP_SERVER_ENV} is set")
    sky_cli = shutil.which("sky", path=str(Path(sys.executable).parent))
    if sky_cli is None:
        pytest.skip("the `sky` command is not installed next to this Python")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
    env.update(
        HOME=str(tmp_path_factory.mktemp("skyhome")),
        SKYPILOT_DISABLE_USAGE_COLLECTION="1",
        SKYPILOT_API_SERVER_LOCAL_PORT=str(port),
    )
    try:
        started = subprocess.run(
            [sky_cli, "api", "start", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        started = None
    try:
        if started is None or started.returncode != 0:
            detail = "timed out" if started is None else (started.stdout + started.stderr)[-500:]
            pytest.skip(f"a local SkyPilot API server cannot start here: {detail}")
        yield f"http://127.0.0.1:{port}", env
    finally:
        subprocess.run(
            [sky_cli, "api", "stop"], env=env, capture_output=True, timeout=60, check=False
        )


def test_launch_without_any_cloud_is_a_clear_error_not_a_hang(
    local_api_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    endpoint, env = local_api_server

    done = subprocess.run(
        [sys.executable, "-c", REAL_SERVER_SCRIPT, endpoint, str(tmp_path)],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    kind, message = result["run"]
    assert kind == "TaskSpecError"
    assert "No cloud is enabled" in message
    assert "sky check" in message
    assert result["cancel"] in ("cancelled", "finished first: " + message)
    assert result["clusters"] == []
    assert result["warnings"] == [], "cancelling and tearing down went through cleanly"


# -- infrastructure failures and the job's own exit status ----------------------------------------


async def test_the_run_commands_are_wrapped_to_print_their_exit_status(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    await backend.run(make_run(checkout), io.BytesIO())

    run = fake.named("launch")[0].args[0].run
    assert run == wrap_run("python train.py --epochs $EPOCHS")
    assert run.startswith("(\npython train.py --epochs $EPOCHS\n)\n")
    assert f'echo "{EXIT_MARKER} $__skyrun_exit"' in run


def test_the_wrapper_reports_the_commands_own_status_and_keeps_it(tmp_path: Path) -> None:
    script = wrap_run("echo hello\nif true; then\n  exit 7\nfi\n# a comment last")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)

    assert done.returncode == 7
    assert done.stdout == f"hello\n{EXIT_MARKER} 7\n"


async def test_a_failed_job_reports_the_tasks_own_exit_status(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    fake.job_output = f"(task, pid=7) boom\n(task, pid=7) {EXIT_MARKER} 3\n"

    assert await backend.run(make_run(checkout), io.BytesIO()) == 3


async def test_a_printed_status_never_turns_a_failure_into_a_success(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    fake.job_output = f"(task, pid=7) {EXIT_MARKER} 0\n"

    assert await backend.run(make_run(checkout), io.BytesIO()) == EXIT_FAILED


async def test_a_status_split_across_writes_is_still_read(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    fake.job_output = f"x\n(task, pid=7) {EXIT_MARKER}"
    fake.job_output_after = " 42\n"

    assert await backend.run(make_run(checkout), io.BytesIO()) == 42


async def test_a_job_failing_on_a_cluster_that_vanished_is_an_infrastructure_failure(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    fake.lose_cluster = True

    with pytest.raises(InfraError) as caught:
        await backend.run(make_run(checkout), io.BytesIO())

    assert caught.value.cause is InfraCause.LOST
    assert f"cluster {CLUSTER} is gone after its job ended (code 100)" in str(caught.value)
    assert fake.named("job_status")[0].args == (CLUSTER, [1])


async def test_a_cluster_whose_job_table_lost_the_job_is_lost(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    original = fake._result

    def result(kind: str, info: dict[str, Any]) -> Any:
        if kind == "job_status":
            return {1: None}
        return original(kind, info)

    fake._result = result  # type: ignore[method-assign]

    with pytest.raises(InfraError, match=f"cluster {CLUSTER} is without the job after its job"):
        await backend.run(make_run(checkout), io.BytesIO())


async def test_a_cluster_whose_node_no_longer_answers_is_lost(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    # What SkyPilot says right after Slurm cancelled the allocation under the cluster.
    fake.exit_code = 143
    original = fake._result

    def result(kind: str, info: dict[str, Any]) -> Any:
        if kind == "job_status":
            raise exceptions.CommandError(
                1, "job status", "Failed to get job status.", "srun: error: job 10 has expired"
            )
        return original(kind, info)

    fake._result = result  # type: ignore[method-assign]

    with pytest.raises(InfraError, match=f"cluster {CLUSTER} is unreachable after its job ended"):
        await backend.run(make_run(checkout), io.BytesIO())


async def test_a_cluster_skypilot_finds_not_up_is_lost_in_that_state(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    original = fake._result

    def result(kind: str, info: dict[str, Any]) -> Any:
        if kind == "job_status":
            raise exceptions.ClusterNotUpError("not up", cluster_status=sky.ClusterStatus.INIT)
        return original(kind, info)

    fake._result = result  # type: ignore[method-assign]

    with pytest.raises(InfraError, match=f"cluster {CLUSTER} is init after its job ended"):
        await backend.run(make_run(checkout), io.BytesIO())


async def test_a_job_whose_driver_died_is_an_infrastructure_failure(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    fake.job_state = JobStatus.FAILED_DRIVER

    with pytest.raises(InfraError, match="is failed_driver after its job ended"):
        await backend.run(make_run(checkout), io.BytesIO())


async def test_a_job_that_failed_by_itself_is_returned(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    fake.job_state = JobStatus.FAILED

    assert await backend.run(make_run(checkout), io.BytesIO()) == EXIT_FAILED


async def test_a_broken_job_stream_on_a_vanished_cluster_is_a_lost_cluster(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.lose_cluster = True
    fake.tail_error = exceptions.CommandError(255, "ssh", "Connection closed by remote host", None)

    with pytest.raises(InfraError) as caught:
        await backend.run(make_run(checkout), io.BytesIO())

    assert caught.value.cause is InfraCause.LOST
    assert "job stream broke" in str(caught.value)


async def test_a_failed_job_on_a_healthy_cluster_is_the_tasks_failure(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED

    assert await backend.run(make_run(checkout), io.BytesIO()) == EXIT_FAILED
    assert len(fake.named("job_status")) == 1


async def test_when_skypilot_cannot_tell_a_failed_job_stays_the_tasks_failure(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.exit_code = EXIT_FAILED
    original = fake._result

    def result(kind: str, info: dict[str, Any]) -> Any:
        if kind == "job_status":
            raise requests.ConnectionError("API server went away")
        return original(kind, info)

    fake._result = result  # type: ignore[method-assign]

    assert await backend.run(make_run(checkout), io.BytesIO()) == EXIT_FAILED


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            exceptions.ResourcesUnavailableError(
                "no capacity in us-east-1", failover_history=[RuntimeError("capacity")]
            ),
            InfraCause.CAPACITY,
        ),
        (requests.ConnectionError("API server went away"), InfraCause.CONNECTION),
        (exceptions.ApiServerConnectionError("http://sky:46580"), InfraCause.CONNECTION),
        (exceptions.ClusterNotUpError("cluster is INIT"), InfraCause.LOST),
    ],
)
async def test_infrastructure_errors_while_launching_name_their_cause(
    backend: SkyPilotBackend,
    fake: FakeSky,
    checkout: Path,
    error: Exception,
    cause: InfraCause,
) -> None:
    fake.request_error = error

    with pytest.raises(InfraError) as caught:
        await backend.run(make_run(checkout), io.BytesIO())

    assert caught.value.cause is cause


async def test_no_resource_anywhere_stays_the_tasks_error_not_the_infrastructures(
    backend: SkyPilotBackend, fake: FakeSky, checkout: Path
) -> None:
    fake.request_error = exceptions.ResourcesUnavailableError("no cloud offers 9x H100")

    with pytest.raises(TaskSpecError):
        await backend.run(make_run(checkout), io.BytesIO())


async def test_exec_on_a_cluster_that_is_gone_is_a_lost_cluster(
    backend: SkyPilotBackend, checkout: Path
) -> None:
    with pytest.raises(InfraError) as caught:
        await backend.run(make_run(checkout, launch=False), io.BytesIO())

    assert caught.value.cause is InfraCause.LOST
