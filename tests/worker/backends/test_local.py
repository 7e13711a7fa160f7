from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest
from typing_extensions import Buffer

from worker.backends.base import BackendError, ComputeBackend, TaskRun, TaskSpecError
from worker.backends.local import (
    CLOUD_MOUNT,
    CLUSTER_NOT_UP,
    ENV_NOT_SET,
    JOB_RECORD,
    LOG_IGNORING_RESOURCES,
    LOG_LEFTOVERS_KILLED,
    LOG_MANAGED,
    LOG_SETUP_FAILED,
    MOUNT_MISSING,
    MULTI_NODE,
    WORKDIR_NOT_LOCAL,
    LocalBackend,
    list_clusters,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
CLUSTER = "sr-run1-train"
PREFIXED = re.compile(r"^\((setup|[\w-]+,) pid=(\d+)\) (.*)$")


@pytest.fixture
def clusters(tmp_path: Path) -> Path:
    return tmp_path / "clusters"


@pytest.fixture
def backend(clusters: Path) -> LocalBackend:
    return LocalBackend(clusters, kill_grace_seconds=1.0)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "data").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "hello.txt").write_text("hello from the repo\n")
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    (root / "configs" / "a.yaml").write_text("lr: 0.1\n")
    return root


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "stage.log"


@pytest.fixture
def log(log_path: Path) -> Iterator[BinaryIO]:
    with log_path.open("ab") as handle:
        yield handle


def task_run(
    checkout: Path,
    task_yaml: str,
    *,
    cluster: str = CLUSTER,
    launch: bool = True,
    envs: dict[str, str] | None = None,
    stage: str = "train",
    managed: bool = False,
) -> TaskRun:
    return TaskRun(
        run_id="run1",
        stage=stage,
        cluster_name=cluster,
        task_yaml=task_yaml,
        envs=envs or {},
        checkout_dir=checkout,
        launch=launch,
        managed=managed,
    )


def output(log_path: Path) -> list[tuple[str, str]]:
    """(who, text) of each prefixed log line: who is "setup" or the task's name."""
    lines = []
    for line in log_path.read_text().splitlines():
        match = PREFIXED.match(line)
        if match:
            lines.append((match.group(1).rstrip(","), match.group(3)))
    return lines


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return not Path("/proc").is_dir()
    return state != "Z"  # nobody may reap orphans in a container: a zombie is dead


async def eventually(predicate: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def pid_written(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def host_pid(path: Path) -> int:
    """The host pid of a live process whose pid (in its own PID namespace) is in `path`.

    A sandboxed job writes its pid inside its PID namespace; outside, the process is found by
    its NSpid and its cwd (the directory `path` lies in). Unsandboxed, the pid is the host's.
    """
    pid = read_pid(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        nspids = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
        if len(nspids) > 1 and int(nspids[-1]) == pid and cwd == str(path.parent):
            return int(entry.name)
    return pid


@pytest.fixture(params=[True, False], ids=["sandbox", "no-sandbox"])
def any_backend(request: pytest.FixtureRequest, clusters: Path) -> LocalBackend:
    return LocalBackend(clusters, kill_grace_seconds=1.0, sandbox=request.param)


async def test_launch_runs_setup_then_run_with_envs_and_workdir(
    backend: LocalBackend, checkout: Path, clusters: Path, log: BinaryIO, log_path: Path
) -> None:
    task_yaml = """\
name: train
envs:
  FROM_TASK: task-value
  OVERRIDDEN: task-value
setup: |
  echo "setup OVERRIDDEN=$OVERRIDDEN rank=$SKYPILOT_SETUP_NODE_RANK nodes=$SKYPILOT_NUM_NODES"
  echo installed > setup-marker
run: |
  echo "run FROM_TASK=$FROM_TASK OVERRIDDEN=$OVERRIDDEN"
  echo "rank=$SKYPILOT_NODE_RANK nodes=$SKYPILOT_NUM_NODES ips=$SKYPILOT_NODE_IPS"
  echo "gpus=$SKYPILOT_NUM_GPUS_PER_NODE task_id=$SKYPILOT_TASK_ID"
  echo "info=$SKYPILOT_CLUSTER_INFO"
  echo "cwd=$PWD"
  cat hello.txt setup-marker
"""
    task = task_run(checkout, task_yaml, envs={"OVERRIDDEN": "override"})

    assert await backend.run(task, log) == 0

    lines = output(log_path)
    assert lines[0] == ("setup", "setup OVERRIDDEN=override rank=0 nodes=1")
    texts = [text for who, text in lines[1:] if who == "train"]
    assert texts[0] == "run FROM_TASK=task-value OVERRIDDEN=override"
    assert texts[1] == "rank=0 nodes=1 ips=127.0.0.1"
    assert texts[2].startswith("gpus=0 task_id=sky-")
    assert texts[2].endswith(f"_{CLUSTER}_train")
    assert f'"cluster_name": "{CLUSTER}"' in texts[3]
    assert texts[4] == f"cwd={clusters.absolute() / CLUSTER / 'sky_workdir'}"
    assert texts[5:] == ["hello from the repo", "installed"]
    assert list_clusters(clusters) == [CLUSTER]


async def test_the_timeline_hears_when_setup_and_job_begin(
    backend: LocalBackend, checkout: Path, log: BinaryIO
) -> None:
    events: list[str] = []
    task = task_run(checkout, "setup: echo s\nrun: echo r\n")
    task.setup_started = lambda: events.append("setup")
    task.job_started = lambda: events.append("job")
    assert await backend.run(task, log) == 0
    assert events == ["setup", "job"]

    events.clear()  # an exec has no setup; provisioning ahead has no job
    assert await backend.run(replace(task, launch=False), log) == 0
    assert events == ["job"]
    events.clear()
    provisioning = replace(task, cluster_name=f"{CLUSTER}-2", provision_only=True)
    assert await backend.run(provisioning, log) == 0
    assert events == ["setup"]


async def test_exec_shares_the_cluster_and_skips_setup(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    launch = task_run(checkout, "run: echo weights > model.bin\n")
    assert await backend.run(launch, log) == 0
    (checkout / "late.txt").write_text("synced on exec\n")

    exec_yaml = "setup: echo SETUP-RAN\nrun: cat model.bin late.txt\n"
    code = await backend.run(task_run(checkout, exec_yaml, launch=False, stage="eval"), log)

    assert code == 0
    assert output(log_path) == [("task", "weights"), ("task", "synced on exec")]


async def test_exec_on_a_missing_cluster_is_a_backend_error(
    backend: LocalBackend, checkout: Path, log: BinaryIO
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.run(task_run(checkout, "run: echo hi\n", launch=False), log)
    assert str(caught.value) == CLUSTER_NOT_UP.format(name=CLUSTER)


async def test_failing_setup_returns_its_code_and_skips_run(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    task_yaml = "setup: |\n  echo preparing\n  exit 3\nrun: echo SHOULD-NOT-RUN\n"

    assert await backend.run(task_run(checkout, task_yaml), log) == 3

    assert output(log_path) == [("setup", "preparing")]
    assert LOG_SETUP_FAILED.format(code=3) in log_path.read_text()
    assert "SHOULD-NOT-RUN" not in log_path.read_text()


async def test_failing_run_returns_its_code_with_stderr_in_the_log(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    task_yaml = "run: |\n  echo working\n  echo boom >&2\n  exit 7\n"

    assert await backend.run(task_run(checkout, task_yaml), log) == 7

    assert output(log_path) == [("task", "working"), ("task", "boom")]


async def test_output_is_prefixed_per_line_not_per_carriage_return(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    task_yaml = "run: |\n  printf 'step 1\\rstep 2\\n'\n  printf 'no newline at the end'\n"

    assert await backend.run(task_run(checkout, task_yaml), log) == 0

    assert re.fullmatch(
        rb"\(task, pid=\d+\) step 1\rstep 2\n\(task, pid=\d+\) no newline at the end\n",
        log_path.read_bytes(),
    )


class UnwritableLog(io.BytesIO):
    """Fails once the job's output comes (the backend's own notes before it still fit)."""

    def write(self, data: Buffer, /) -> int:
        if b"spam" in bytes(data):
            raise OSError(28, "No space left on device")
        return super().write(data)


async def test_a_log_that_cannot_be_written_stops_the_job(
    any_backend: LocalBackend, checkout: Path, clusters: Path
) -> None:
    task_yaml = "run: |\n  echo $$ > shell.pid\n  while true; do echo spam; sleep 0.01; done\n"
    workdir = clusters / CLUSTER / "sky_workdir"

    with pytest.raises(OSError, match="No space left"):
        await any_backend.run(task_run(checkout, task_yaml), UnwritableLog())

    assert (workdir / "shell.pid").exists()
    await eventually(lambda: not processes_in(workdir), seconds=15)


def processes_in(workdir: Path) -> list[int]:
    """Host pids of the live processes whose cwd is `workdir` (a job's, sandboxed or not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == str(workdir) and alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


async def test_cancellation_kills_the_whole_process_group(
    any_backend: LocalBackend, checkout: Path, clusters: Path, log: BinaryIO, log_path: Path
) -> None:
    backend = any_backend
    task_yaml = """\
run: |
  echo $$ > shell.pid
  bash -c 'echo $$ > child.pid; sleep 300 & echo $! > grandchild.pid; wait'
"""
    workdir = clusters / CLUSTER / "sky_workdir"
    running = asyncio.create_task(backend.run(task_run(checkout, task_yaml), log))
    await eventually(lambda: pid_written(workdir / "grandchild.pid"))
    pids = [host_pid(workdir / name) for name in ("shell.pid", "child.pid", "grandchild.pid")]
    assert all(alive(pid) for pid in pids)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    await eventually(lambda: not any(alive(pid) for pid in pids), seconds=15)
    assert (clusters / CLUSTER).is_dir()  # left for down
    assert not (clusters / CLUSTER / JOB_RECORD).exists()
    await backend.down(CLUSTER)
    assert not (clusters / CLUSTER).exists()


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "no-sandbox"])
async def test_cancellation_sigkills_what_ignores_sigterm(
    clusters: Path, checkout: Path, log: BinaryIO, log_path: Path, sandbox: bool
) -> None:
    backend = LocalBackend(clusters, kill_grace_seconds=0.3, sandbox=sandbox)
    task_yaml = """\
run: |
  trap '' TERM
  sleep 300 &
  echo $! > sleeper.pid
  echo started
  wait
"""
    running = asyncio.create_task(backend.run(task_run(checkout, task_yaml), log))
    await eventually(lambda: "started" in log_path.read_text())  # output streams as it comes
    sleeper = host_pid(clusters / CLUSTER / "sky_workdir" / "sleeper.pid")

    started = time.monotonic()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert time.monotonic() - started < 10
    await eventually(lambda: not alive(sleeper), seconds=15)


async def test_processes_left_running_by_the_task_are_stopped(
    any_backend: LocalBackend, checkout: Path, clusters: Path, log: BinaryIO, log_path: Path
) -> None:
    # Also one that left the process group: in the sandbox, its PID namespace ends with the job.
    task_yaml = (
        "run: |\n  sleep 300 &\n  echo $! > background.pid\n  setsid sleep 301 &\n  echo done\n"
    )
    workdir = clusters / CLUSTER / "sky_workdir"

    assert await any_backend.run(task_run(checkout, task_yaml), log) == 0

    assert (workdir / "background.pid").exists()
    assert ("task", "done") in output(log_path)
    if any_backend.sandboxed:
        await eventually(lambda: not processes_in(workdir), seconds=15)
    else:
        background = read_pid(workdir / "background.pid")
        await eventually(lambda: not alive(background), seconds=15)
        assert LOG_LEFTOVERS_KILLED in log_path.read_text()
        for pid in processes_in(workdir):  # the setsid one escapes an unsandboxed job
            os.kill(pid, signal.SIGKILL)


async def test_down_removes_the_cluster_and_is_idempotent(
    backend: LocalBackend, checkout: Path, clusters: Path, log: BinaryIO
) -> None:
    # What a task leaves may be read-only (Go module caches are): down removes it anyway.
    task_yaml = "run: |\n  mkdir -p cache/pkg && touch cache/pkg/f && chmod -R a-w cache\n"
    assert await backend.run(task_run(checkout, task_yaml), log) == 0
    assert list_clusters(clusters) == [CLUSTER]

    await backend.down(CLUSTER)
    await backend.down(CLUSTER)
    await backend.down("sr-never-launched")

    assert not (clusters / CLUSTER).exists()
    assert list_clusters(clusters) == []


CRASHING_WORKER = """
import asyncio, sys
from pathlib import Path
from worker.backends.base import TaskRun
from worker.backends.local import LocalBackend

TASK = "run: |\\n  echo $$ > shell.pid\\n  sleep 300 &\\n  echo $! > sleeper.pid\\n  wait\\n"

async def main() -> None:
    clusters, checkout = Path(sys.argv[1]), Path(sys.argv[2])
    backend = LocalBackend(clusters, sandbox=sys.argv[3] == "on")
    runs = []
    for name in sys.argv[4:]:
        task = TaskRun("run", "stage", name, TASK, {}, checkout, launch=True)
        runs.append(backend.run(task, open(clusters.parent / f"{name}.log", "ab")))
    await asyncio.gather(*runs)

asyncio.run(main())
"""


async def test_jobs_of_a_worker_killed_with_sigkill_are_killed_by_the_next_run_or_down(
    clusters: Path, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    backend = LocalBackend(clusters, kill_grace_seconds=1.0, sandbox=False)
    names = ["crash-a", "crash-b"]
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WORKER,
        str(clusters),
        str(checkout),
        "off",
        *names,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    workdirs = [clusters / name / "sky_workdir" for name in names]
    await eventually(lambda: all(pid_written(w / "sleeper.pid") for w in workdirs))
    shells = [read_pid(w / "shell.pid") for w in workdirs]
    sleepers = [read_pid(w / "sleeper.pid") for w in workdirs]

    worker.kill()
    await worker.wait()

    if sys.platform.startswith("linux"):  # PR_SET_PDEATHSIG took the job's shell along
        await eventually(lambda: not any(alive(pid) for pid in shells), seconds=15)
    assert all(alive(pid) for pid in sleepers)  # in the job's process group, outliving both

    assert await backend.run(task_run(checkout, "run: echo again\n", cluster=names[0]), log) == 0
    assert not alive(sleepers[0])
    assert alive(sleepers[1])

    await backend.down(names[1])
    assert not alive(sleepers[1])
    assert list_clusters(clusters) == [names[0]]


async def test_a_sandboxed_job_dies_whole_with_a_worker_killed_with_sigkill(
    backend: LocalBackend, checkout: Path, clusters: Path, log: BinaryIO
) -> None:
    names = ["crash-a", "crash-b"]
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WORKER,
        str(clusters),
        str(checkout),
        "on",
        *names,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    workdirs = [clusters / name / "sky_workdir" for name in names]
    await eventually(lambda: all(pid_written(w / "sleeper.pid") for w in workdirs))
    sleepers = [host_pid(w / "sleeper.pid") for w in workdirs]
    assert all(alive(pid) for pid in sleepers)

    worker.kill()
    await worker.wait()

    # The sandbox dies with its worker, and its PID namespace takes every process along.
    await eventually(lambda: not any(processes_in(w) for w in workdirs), seconds=15)
    assert not any(alive(pid) for pid in sleepers)
    assert await backend.run(task_run(checkout, "run: echo again\n", cluster=names[0]), log) == 0
    await backend.down(names[1])
    assert list_clusters(clusters) == [names[0]]


async def test_a_recorded_process_group_that_is_not_ours_is_left_alone(
    backend: LocalBackend, clusters: Path
) -> None:
    stranger = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
    try:
        (clusters / CLUSTER).mkdir(parents=True)
        # The pgid was recorded by a job long gone and reused since (no token of ours).
        (clusters / CLUSTER / JOB_RECORD).write_text(f"{stranger.pid} not-our-token\n")

        await backend.down(CLUSTER)

        assert not (clusters / CLUSTER).exists()
        assert alive(stranger.pid)
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        await stranger.wait()


async def test_local_file_mounts_are_copied_into_the_cluster(
    backend: LocalBackend,
    checkout: Path,
    clusters: Path,
    log: BinaryIO,
    log_path: Path,
) -> None:
    task_yaml = """\
file_mounts:
  /data/train.csv: data/train.csv
  ~/configs: ./configs
  ~/sky_workdir/inputs: data
  relative/train.csv: data/train.csv
  /../../escaped: hello.txt
run: |
  cat $SKYRUN_MOUNT_ROOT/data/train.csv $SKYRUN_MOUNT_HOME/configs/a.yaml
  cat inputs/train.csv relative/train.csv
"""
    assert await backend.run(task_run(checkout, task_yaml), log) == 0

    assert [text for _, text in output(log_path)] == [
        *("a,b", "1,2", "lr: 0.1"),
        *("a,b", "1,2", "a,b", "1,2"),
    ]
    assert (clusters / CLUSTER / "root" / "escaped").read_text() == "hello from the repo\n"


async def test_resources_are_ignored_with_a_note_in_the_log(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    task_yaml = "resources:\n  accelerators: A100:8\nrun: echo trained\n"

    assert await backend.run(task_run(checkout, task_yaml), log) == 0

    text = log_path.read_text()
    assert LOG_IGNORING_RESOURCES.format(resources='{"accelerators": "A100:8"}') in text
    assert output(log_path) == [("task", "trained")]


async def test_a_managed_stage_runs_as_an_ordinary_one_and_says_so(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    task_yaml = "setup: echo set up\nrun: echo trained; exit 3\n"
    note = LOG_MANAGED.format(stage="train")

    assert await backend.run(task_run(checkout, task_yaml, managed=True), log) == 3
    assert await backend.run(task_run(checkout, task_yaml, launch=False, managed=True), log) == 3

    text = log_path.read_text()
    assert text.count(note) == 2
    assert "managed: true" in note and "ordinary stage" in note
    assert output(log_path) == [("setup", "set up"), ("task", "trained"), ("task", "trained")]


async def test_an_ordinary_stage_says_nothing_about_managed_jobs(
    backend: LocalBackend, checkout: Path, log: BinaryIO, log_path: Path
) -> None:
    assert await backend.run(task_run(checkout, "run: echo trained\n"), log) == 0

    assert "managed" not in log_path.read_text()


async def test_worker_secrets_are_not_passed_to_tasks(
    clusters: Path,
    checkout: Path,
    log: BinaryIO,
    log_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unsandboxed, the worker's other variables pass (SKYRUN_LOCAL_SANDBOX=off); see
    # tests/worker/backends/test_sandbox.py for what a sandboxed job gets.
    backend = LocalBackend(clusters, sandbox=False)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("SKYRUN_TEST_VISIBLE", "visible")
    task_yaml = 'run: echo "${GITHUB_TOKEN:-unset} $SKYRUN_TEST_VISIBLE"\n'

    assert await backend.run(task_run(checkout, task_yaml), log) == 0

    assert output(log_path) == [("task", "unset visible")]


@pytest.mark.parametrize(
    ("task_yaml", "message"),
    [
        (
            "file_mounts:\n  /data: s3://bucket/x\nrun: echo\n",
            CLOUD_MOUNT.format(dest="/data", src="s3://bucket/x"),
        ),
        (
            "file_mounts:\n  /data:\n    source: gs://bucket\n    mode: MOUNT\nrun: echo\n",
            CLOUD_MOUNT.format(dest="/data", src="gs://bucket"),
        ),
        ("num_nodes: 2\nrun: echo\n", MULTI_NODE.format(num_nodes=2)),
        ("envs:\n  HF_TOKEN:\nrun: echo\n", ENV_NOT_SET.format(name="HF_TOKEN")),
        (
            "workdir:\n  url: https://github.com/o/r\n  ref: main\nrun: echo\n",
            WORKDIR_NOT_LOCAL.format(workdir="https://github.com/o/r"),
        ),
    ],
    ids=["cloud-url-mount", "bucket-mount", "multi-node", "missing-env", "git-workdir"],
)
async def test_tasks_the_local_backend_cannot_run_are_spec_errors(
    backend: LocalBackend, checkout: Path, task_yaml: str, message: str
) -> None:
    with pytest.raises(TaskSpecError) as caught:
        await backend.validate(task_yaml, {}, checkout)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("task_yaml", "fragment"),
    [
        ("run: [echo\n", "line 2"),
        ("bogus: 1\nrun: echo\n", "bogus"),
        ("run: echo\nrun: echo again\n", "Duplicate key 'run'"),
        ("- run: echo\n", "expected a mapping"),
    ],
    ids=["syntax", "unknown-field", "duplicate-key", "not-a-mapping"],
)
async def test_invalid_yaml_is_a_spec_error(
    backend: LocalBackend, checkout: Path, task_yaml: str, fragment: str
) -> None:
    with pytest.raises(TaskSpecError) as caught:
        await backend.validate(task_yaml, {}, checkout)
    assert str(caught.value).startswith("invalid task YAML: ")
    assert fragment in str(caught.value)


async def test_required_env_given_by_the_caller_is_accepted(
    backend: LocalBackend, checkout: Path
) -> None:
    await backend.validate("envs:\n  HF_TOKEN:\nrun: echo\n", {"HF_TOKEN": "x"}, checkout)


async def test_run_rejects_a_bad_task_before_creating_the_cluster(
    backend: LocalBackend, checkout: Path, clusters: Path, log: BinaryIO
) -> None:
    task_yaml = "file_mounts:\n  /data: missing/dir\nrun: echo\n"

    with pytest.raises(TaskSpecError) as caught:
        await backend.run(task_run(checkout, task_yaml), log)

    assert str(caught.value) == MOUNT_MISSING.format(
        dest="/data", src="missing/dir", path=checkout / "missing/dir"
    )
    assert list_clusters(clusters) == []


def test_implements_the_compute_backend_interface(clusters: Path) -> None:
    backend: ComputeBackend = LocalBackend(clusters)  # checked by mypy
    assert backend.name == "local"
    assert backend.dashboard_url() == ""
