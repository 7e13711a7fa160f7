"""The local backend's sandbox, attacked by real jobs: each promise of backends/sandbox.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.backends.base import TaskRun, TaskSpecError
from worker.backends.local import (
    BUCKET_ENV,
    LOG_SANDBOX_OFF,
    MOUNT_OUTSIDE,
    WORKDIR_OUTSIDE,
    LocalBackend,
    list_clusters,
)
from worker.backends.sandbox import (
    BWRAP_FAILED,
    BWRAP_MISSING,
    SANDBOX_UID,
    Sandbox,
    SandboxUnavailable,
    find_bwrap,
)
from worker.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = REPO_ROOT / "examples" / "mock-training"
SECRETS = {
    "GITHUB_TOKEN": "ghp_SECRETgithubtoken0001",
    "GITHUB_WEBHOOK_SECRET": "SECRETwebhook0002",
    "SLACK_BOT_TOKEN": "xoxb-SECRETslack0003",
    "SLACK_SIGNING_SECRET": "SECRETsigning0004",
    "TEMPORAL_API_KEY": "SECRETtemporal0005",
}
FILE_SECRETS = {
    "env_file": "SECRETdotenv0006",
    "app_key": "SECRETappkey0007",
    "tls_key": "SECRETtlskey0008",
    "tls_cert": "SECRETtlscert0009",
    "ssh": "SECRETssh0010",
    "data": "SECRETdatadir0011",
    "log": "SECRETlogstore0012",
    "keyring": "SECRETkeyring0013",
}
ALL_SECRETS = [*SECRETS.values(), *FILE_SECRETS.values()]


@dataclass
class Host:
    """A worker's machine where every secret lies under a directory the sandbox binds."""

    root: Path
    data: Path
    logs: Path
    checkout: Path
    backend: LocalBackend
    paths: dict[str, Path]
    worker_pid: int
    """A process started with the worker's secrets in its environment, as a real worker is."""


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    # A tool installation on PATH (`<root>/bin`) makes the sandbox bind `<root>` read-only:
    # the worker's cwd, data dir, key files and HOME are all inside it, so each must be hidden.
    root = tmp_path / "tools"
    (root / "bin").mkdir(parents=True)
    tool = root / "bin" / "skyrun-test-tool"
    tool.write_text("#!/bin/sh\necho tool works\n")
    tool.chmod(0o755)
    data = root / "data"
    logs = data / "logs"
    home = root / "home"
    paths = {
        "env_file": root / ".env",
        "app_key": root / "keys" / "app.pem",
        "tls_key": root / "keys" / "tls.key",
        "tls_cert": root / "keys" / "tls.crt",
        "ssh": home / ".ssh" / "id_ed25519",
        "data": data / "checkouts" / "other-run" / "secret.txt",
        "log": logs / "other-run" / "train.log",
        "keyring": home / ".local" / "share" / "keyrings" / "login.keyring",
    }
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{FILE_SECRETS[name]}\n")
    (data / "temporal.db").write_text("SECRETdatadir0011 in the Temporal db\n")
    (home / ".local" / "bin").mkdir(parents=True)  # HOME's own installation dir on PATH
    checkout = data / "checkouts" / "run1"
    checkout.mkdir(parents=True)
    (checkout / "hello.txt").write_text("hello from the repo\n")
    (checkout / "leak-env").symlink_to(paths["env_file"])
    (checkout / "leak-data").symlink_to(data)
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{root / 'bin'}:{home / '.local' / 'bin'}:{os.environ['PATH']}")
    monkeypatch.chdir(root)
    settings = load_settings(
        _env_file=None,
        SKYRUN_DATA_DIR=data,
        GITHUB_APP_PRIVATE_KEY_PATH=paths["app_key"],
        TEMPORAL_TLS_KEY_PATH=paths["tls_key"],
        TEMPORAL_TLS_CERT_PATH=paths["tls_cert"],
    )
    backend = LocalBackend.from_settings(settings)
    backend.kill_grace_seconds = 1.0
    # os.environ changes do not show in /proc/self/environ: a process exec'd with them does.
    worker = subprocess.Popen(["sleep", "300"], env={**os.environ, **SECRETS})
    try:
        yield Host(root, data, logs, checkout, backend, paths, worker.pid)
    finally:
        worker.kill()
        worker.wait()


def task(
    checkout: Path,
    task_yaml: str,
    *,
    cluster: str = "sr-run1-train",
    lane: str = "acme/repo@branch:main",
    run_id: str = "run1",
    launch: bool = True,
    envs: dict[str, str] | None = None,
) -> TaskRun:
    return TaskRun(
        run_id=run_id,
        stage="train",
        cluster_name=cluster,
        task_yaml=task_yaml,
        envs=envs or {},
        checkout_dir=checkout,
        launch=launch,
        lane=lane,
    )


async def run_job(backend: LocalBackend, run: TaskRun, log_path: Path) -> tuple[int, str]:
    with log_path.open("ab") as log:
        code = await backend.run(run, log)
    return code, log_path.read_text(errors="replace")


def lines(text: str) -> list[str]:
    """The job's own output, without the `(task, pid=N) ` prefixes."""
    return [line.split(") ", 1)[1] for line in text.splitlines() if line.startswith("(")]


HOSTILE = """\
run: |
  echo "--- env"; env
  echo "--- worker environ"; cat /proc/$WORKER_PID/environ /proc/$TEST_PID/environ
  echo "--- every environ"; for f in /proc/[0-9]*/environ; do cat "$f"; echo; done
  echo "--- data dir"; grep -ra . "$DATA_DIR" 2>&1
  echo "--- files"
  for f in $FILES; do cat "$f" 2>&1; done
  echo "--- symlinks in the repo"; cat leak-env 2>&1; grep -ra . leak-data/ 2>&1
  echo "--- walk"; grep -rsa SECRET / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | head -5
  echo "--- write log store"
  mkdir -p "$LOG_DIR/other-run" 2>&1; echo overwritten > "$LOG_DIR/other-run/train.log" 2>&1
  echo "--- tool"; skyrun-test-tool
  echo ATTACK DONE
"""


async def test_a_hostile_job_sees_no_secret_by_any_route(host: Host, tmp_path: Path) -> None:
    files = " ".join(str(path) for path in host.paths.values())
    envs = {
        "WORKER_PID": str(host.worker_pid),
        "TEST_PID": str(os.getpid()),
        "DATA_DIR": str(host.data),
        "LOG_DIR": str(host.logs),
        "FILES": f"{files} {host.data / 'temporal.db'}",
    }
    code, text = await run_job(
        host.backend, task(host.checkout, HOSTILE, envs=envs), tmp_path / "job.log"
    )

    assert code == 0, text
    assert "ATTACK DONE" in text and "tool works" in text  # it ran, with its PATH's programs
    leaked = [secret for secret in ALL_SECRETS if secret in text]
    assert leaked == [], text
    assert host.paths["log"].read_text() == f"{FILE_SECRETS['log']}\n"  # the log store unchanged


async def test_the_hostile_job_does_find_the_secrets_when_unsandboxed(
    host: Host, tmp_path: Path
) -> None:
    """The control: every route of the attack above is real (SKYRUN_LOCAL_SANDBOX=off)."""
    backend = LocalBackend(host.data / "clusters", sandbox=False)
    files = " ".join(str(path) for path in host.paths.values())
    envs = {
        "WORKER_PID": str(host.worker_pid),
        "TEST_PID": str(os.getpid()),
        "DATA_DIR": str(host.data),
        "LOG_DIR": str(host.logs),
        "FILES": files,
    }
    code, text = await run_job(backend, task(host.checkout, HOSTILE, envs=envs), tmp_path / "l")

    assert code == 0
    assert [secret for secret in ALL_SECRETS if secret not in text] == []
    assert host.paths["log"].read_text() == "overwritten\n"


async def test_the_job_is_an_unprivileged_user_in_its_own_namespaces(
    host: Host, tmp_path: Path
) -> None:
    script = """\
run: |
  echo "uid=$(id -u) gid=$(id -g)"
  grep CapEff /proc/self/status
  echo "pid=$$"
  ls /proc | grep -c '^[0-9]'
  for ns in pid mnt user net; do echo "$ns=$(readlink /proc/self/ns/$ns)"; done
  cat /proc/$WORKER_PID/environ > /dev/null 2>&1 && echo READ-WORKER || echo no-worker
  cat /proc/$TEST_PID/environ > /dev/null 2>&1 && echo READ-WORKER || echo no-worker
  python3 -c 'print("python ok")'
"""
    envs = {"WORKER_PID": str(host.worker_pid), "TEST_PID": str(os.getpid())}
    code, text = await run_job(host.backend, task(host.checkout, script, envs=envs), tmp_path / "l")

    assert code == 0, text
    out = lines(text)
    assert out[0] == f"uid={SANDBOX_UID} gid={SANDBOX_UID}"
    assert out[1].split() == ["CapEff:", "0000000000000000"]
    assert out[2] == "pid=2"  # bwrap is 1 in its PID namespace
    assert int(out[3]) < 10  # only the sandbox's processes
    own = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("pid", "mnt", "user", "net")}
    seen = dict(line.split("=", 1) for line in out[4:8])
    assert seen["pid"] != own["pid"] and seen["mnt"] != own["mnt"] and seen["user"] != own["user"]
    assert seen["net"] == own["net"]  # the network is kept
    assert out[8:] == ["no-worker", "no-worker", "python ok"]


async def test_the_environment_holds_only_what_the_task_is_given(
    host: Host, tmp_path: Path
) -> None:
    os.environ["SKYRUN_TEST_WORKER_ONLY"] = "worker-only"
    try:
        code, text = await run_job(
            host.backend,
            task(host.checkout, "envs:\n  MINE: mine\nrun: env | sort\n", envs={"MORE": "more"}),
            tmp_path / "l",
        )
    finally:
        del os.environ["SKYRUN_TEST_WORKER_ONLY"]
    assert code == 0
    names = {line.split("=", 1)[0] for line in lines(text)}
    assert {"MINE", "MORE", "PATH", "HOME", BUCKET_ENV, "SKYPILOT_TASK_ID"} <= names
    assert "SKYRUN_TEST_WORKER_ONLY" not in names
    assert not names & set(SECRETS)
    allowed = {"PWD", "SHLVL", "_", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ"}
    extra = {n for n in names - allowed if not n.startswith(("SKYPILOT_", "SKYRUN_", "PYTHON"))} - {
        "MINE",
        "MORE",
        "PATH",
        "HOME",
        BUCKET_ENV,
    }
    assert extra == set()


async def test_only_the_cluster_and_the_bucket_are_writable(host: Host, tmp_path: Path) -> None:
    script = """\
run: |
  for d in "$PWD" "$(dirname "$PWD")" "$DATA_BUCKET_URL" /tmp "$HOME" \\
      /usr /etc /opt "$CHECKOUT" "$DATA"; do
    if touch "$d/probe" 2>/dev/null; then echo "writable $d"; else echo "refused $d"; fi
  done
"""
    envs = {"CHECKOUT": str(host.checkout), "DATA": str(host.data)}
    code, text = await run_job(host.backend, task(host.checkout, script, envs=envs), tmp_path / "l")

    assert code == 0
    verdicts = [line.split()[0] for line in lines(text)]
    assert verdicts == ["writable"] * 5 + ["refused"] * 3 + ["refused", "writable"], text
    # The data dir is an empty tmpfs inside: the write went nowhere on the host.
    assert not (host.data / "probe").exists()
    assert not (host.checkout / "probe").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workdir", "../.."),
        ("workdir", "/"),
        ("workdir", "~/"),
        ("workdir", "leak-data"),
        ("mount", "../.."),
        ("mount", "/etc/passwd"),
        ("mount", "~/.ssh"),
        ("mount", "leak-env"),
    ],
)
async def test_workdir_and_mounts_outside_the_checkout_are_refused_before_anything_runs(
    host: Host, tmp_path: Path, field: str, value: str
) -> None:
    if field == "workdir":
        task_yaml = f"workdir: {value}\nrun: touch ran\n"
    else:
        task_yaml = f"file_mounts:\n  /data: {value}\nrun: touch ran\n"

    with pytest.raises(TaskSpecError) as caught:
        await host.backend.validate(task_yaml, {}, host.checkout)
    with pytest.raises(TaskSpecError) as again:
        await run_job(host.backend, task(host.checkout, task_yaml), tmp_path / "l")

    message = str(caught.value)
    assert str(again.value) == message
    assert message.startswith("workdir: " if field == "workdir" else "file_mounts: /data -> ")
    assert "outside the repository checkout" in message
    assert list_clusters(host.data / "clusters") == []
    template = WORKDIR_OUTSIDE if field == "workdir" else MOUNT_OUTSIDE
    assert template.split("{")[0] in message


async def test_a_symlink_inside_the_checkout_is_followed_and_kept_inside(
    host: Host, tmp_path: Path
) -> None:
    (host.checkout / "sub").mkdir()
    (host.checkout / "sub" / "f.txt").write_text("inside\n")
    (host.checkout / "alias").symlink_to("sub")
    task_yaml = (
        "workdir: alias\nfile_mounts:\n  /in: alias/f.txt\nrun: cat f.txt $SKYRUN_MOUNT_ROOT/in\n"
    )

    code, text = await run_job(host.backend, task(host.checkout, task_yaml), tmp_path / "l")

    assert code == 0
    assert lines(text) == ["inside", "inside"]


async def test_a_lane_bucket_is_shared_by_its_runs_and_kept_for_a_retry(
    host: Host, tmp_path: Path
) -> None:
    lane = "acme/repo@branch:main"
    write = 'run: echo "from stage one" > "$DATA_BUCKET_URL/handoff"; echo scratch > /tmp/s\n'
    read = 'run: cat "$DATA_BUCKET_URL/handoff" /tmp/s\n'
    assert (await run_job(host.backend, task(host.checkout, write, cluster="c-a"), tmp_path / "a"))[
        0
    ] == 0
    await host.backend.down("c-a")

    # Another cluster, another run of the same lane (a retry): finds it.
    code, text = await run_job(
        host.backend, task(host.checkout, read, cluster="c-b", run_id="run2"), tmp_path / "b"
    )
    assert code == 0
    assert lines(text) == ["from stage one", "scratch"]
    bucket = host.backend.bucket_dir(lane, "run1")
    assert bucket.parent == host.data / "buckets"
    assert (bucket / "handoff").is_file()

    # Another lane sees neither.
    code, text = await run_job(
        host.backend,
        task(host.checkout, read, cluster="c-c", lane="acme/repo@pr:7"),
        tmp_path / "c",
    )
    assert code != 0
    assert "from stage one" not in text

    await host.backend.cleanup_run("run2")
    assert (bucket / "handoff").is_file()  # a lane's bucket outlives its runs


async def test_a_run_without_lane_gets_its_own_bucket_removed_at_cleanup(
    host: Host, tmp_path: Path
) -> None:
    job = 'run: echo "$DATA_BUCKET_URL"; touch "$DATA_BUCKET_URL/x"\n'
    code, text = await run_job(host.backend, task(host.checkout, job, lane=""), tmp_path / "l")
    assert code == 0
    bucket = Path(lines(text)[0])
    assert bucket == host.backend.bucket_dir("", "run1")
    assert bucket != host.backend.bucket_dir("", "run2")
    assert (bucket / "x").exists()

    await host.backend.cleanup_run("run1")

    assert not bucket.exists()
    assert not any((host.data / "buckets").iterdir())


async def test_a_data_bucket_url_set_elsewhere_is_kept(host: Host, tmp_path: Path) -> None:
    job = 'envs:\n  DATA_BUCKET_URL: ""\nrun: echo "url=$DATA_BUCKET_URL"\n'
    code, text = await run_job(
        host.backend,
        task(host.checkout, job, envs={BUCKET_ENV: "s3://team-bucket"}),
        tmp_path / "l",
    )
    assert code == 0
    assert lines(text) == ["url=s3://team-bucket"]
    code, text = await run_job(host.backend, task(host.checkout, job, cluster="c2"), tmp_path / "m")
    assert lines(text) == [f"url={host.backend.bucket_dir('acme/repo@branch:main', 'run1')}"]


def test_idle_buckets_are_pruned_and_used_ones_kept(host: Host) -> None:
    backend = host.backend
    old = backend.bucket_dir("lane-old", "r")
    fresh = backend.bucket_dir("lane-fresh", "r")
    for bucket in (old, fresh):
        bucket.mkdir(parents=True)
        bucket.with_name(bucket.name + ".tmp").mkdir()
    now = time.time()
    stale = now - (backend.bucket_idle_days + 1) * 86400
    os.utime(old, (stale, stale))

    assert backend.prune_buckets(now) == [old.name]

    assert sorted(p.name for p in old.parent.iterdir()) == [fresh.name, fresh.name + ".tmp"]


async def test_operator_mounts_are_read_only_unless_marked_rw(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = tmp_path / "datasets"
    scratch = tmp_path / "scratch"
    datasets.mkdir()
    scratch.mkdir()
    (datasets / "d.csv").write_text("x,y\n")
    settings = load_settings(
        _env_file=None,
        SKYRUN_DATA_DIR=host.data,
        SKYRUN_LOCAL_MOUNTS=f"{datasets},{scratch}:rw",
    )
    backend = LocalBackend.from_settings(settings)
    job = f"""\
run: |
  cat {datasets}/d.csv
  touch {datasets}/new 2>/dev/null && echo ds-writable || echo ds-refused
  touch {scratch}/new && echo scratch-writable
"""
    code, text = await run_job(backend, task(host.checkout, job), tmp_path / "l")
    assert code == 0, text
    assert lines(text) == ["x,y", "ds-refused", "scratch-writable"]
    assert (scratch / "new").exists()


@pytest.mark.parametrize(
    ("value", "problem"),
    [("relative/dir", "not an absolute path"), ("/no/such/dir:rw", "does not exist")],
)
def test_operator_mounts_are_validated_at_settings_load(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        load_settings(_env_file=None, SKYRUN_LOCAL_MOUNTS=value)
    assert "SKYRUN_LOCAL_MOUNTS" in str(caught.value)


async def test_without_bwrap_the_backend_refuses_to_run_and_says_how_to_fix_it(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "only-bash"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    monkeypatch.setenv("PATH", str(bin_dir))
    backend = LocalBackend(host.data / "clusters")

    with pytest.raises(SandboxUnavailable) as caught:
        await run_job(backend, task(host.checkout, "run: touch ran\n"), tmp_path / "l")

    assert str(caught.value) == BWRAP_MISSING
    assert "apt-get install bubblewrap" in BWRAP_MISSING
    assert "SKYRUN_LOCAL_SANDBOX=off" in BWRAP_MISSING
    assert list_clusters(host.data / "clusters") == []
    with pytest.raises(SandboxUnavailable):
        await backend.validate("run: echo\n", {}, host.checkout)


async def test_when_user_namespaces_are_refused_the_backend_says_so(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "fake-bwrap"
    bin_dir.mkdir()
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    backend = LocalBackend(host.data / "clusters")

    with pytest.raises(SandboxUnavailable) as caught:
        await backend.check_sandbox()

    said = "bwrap: setting up uid map: Permission denied"
    assert str(caught.value) == BWRAP_FAILED.format(error=said)
    assert "unprivileged_userns_clone" in str(caught.value)


async def test_sandbox_off_is_loud_in_every_stage_log(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(_env_file=None, SKYRUN_DATA_DIR=host.data, SKYRUN_LOCAL_SANDBOX="off")
    with caplog.at_level("WARNING"):
        backend = LocalBackend.from_settings(settings)
    assert "SKYRUN_LOCAL_SANDBOX=off" in caplog.text and "UNSANDBOXED" in caplog.text

    for cluster in ("c1", "c2"):
        code, text = await run_job(
            backend, task(host.checkout, "run: echo hi\n", cluster=cluster), tmp_path / cluster
        )
        assert code == 0
        assert text.startswith(LOG_SANDBOX_OFF)


def test_the_sandbox_command_keeps_the_environment_off_the_command_line() -> None:
    sandbox = Sandbox(find_bwrap())
    args = sandbox.args(writable=(), cwd=Path("/"), env={"HF_TOKEN": "hf_value"})
    assert args[-3:] == ["--setenv", "HF_TOKEN", "hf_value"]
    assert "--clearenv" in args and "--die-with-parent" in args
    assert sandbox.command(7, ["bash", "x.sh"]) == [
        sandbox.bwrap,
        "--args",
        "7",
        "--",
        "bash",
        "x.sh",
    ]


async def test_the_example_pipeline_runs_unchanged_across_clusters(
    host: Host, tmp_path: Path
) -> None:
    repo = tmp_path / "example"
    shutil.copytree(EXAMPLE, repo)
    envs = {"SKYRUN_RUN_ID": "run1", "NUM_EPOCHS": "2"}
    stages = [
        ("data_preprocessing.yaml", "sr-run1-preprocess", True),
        ("train.yaml", "sr-run1-train", True),
        ("eval.yaml", "sr-run1-train", False),
    ]
    texts = []
    for index, (file, cluster, launch) in enumerate(stages):
        run = task(repo, (repo / file).read_text(), cluster=cluster, launch=launch, envs=envs)
        code, text = await run_job(host.backend, run, tmp_path / f"{index}.log")
        assert code == 0, text
        texts.append(text)
        if index == 0:
            await host.backend.down(cluster)  # as the workflow does: preprocess is done with it
    assert "Metric - accuracy:" in texts[2]


async def test_cancelling_a_sandboxed_job_gives_it_the_grace_period(
    host: Host, tmp_path: Path
) -> None:
    job = """\
run: |
  trap 'echo stopping cleanly; sleep 0.2; echo "saved" > saved; exit 0' TERM
  echo started
  sleep 300 &
  wait
"""
    log_path = tmp_path / "l"
    with log_path.open("ab") as log:
        running = asyncio.create_task(host.backend.run(task(host.checkout, job), log))
        deadline = time.monotonic() + 30
        while "started" not in log_path.read_text():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    # The output after the cancellation is not waited for; the work it did is there.
    assert (host.data / "clusters" / "sr-run1-train" / "sky_workdir" / "saved").exists()
