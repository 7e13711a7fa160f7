"""Local compute backend: runs a SkyPilot task YAML on this machine (`SKYRUN_BACKEND=local`).

The task is parsed and validated by SkyPilot itself, then `setup` and `run` execute in `bash` with
the environment SkyPilot gives a single-node job. A "cluster" is a directory that lives from the
launch that creates it to `down`; stages naming the same cluster share it:

    <clusters_dir>/<cluster_name>/
        sky_workdir/   the task's `workdir` (default: the checkout), synced on launch and exec
                       without deleting what earlier stages left there; cwd of `setup` and `run`
        root/          file_mounts destinations `/x/y` (exported to the task as SKYRUN_MOUNT_ROOT)
        home/          file_mounts destinations `~/x/y` (exported as SKYRUN_MOUNT_HOME);
                       `~/sky_workdir/x` and relative ones `x` land in `sky_workdir/x`
        scripts/       the setup and run scripts of each job
        job.pid        process group and token of the job running now, written by its shell
                       before anything of the task runs

A `managed: true` stage (a SkyPilot managed job elsewhere) runs as an ordinary stage here, with
a line in its log saying so.

File mounts are synced on launch only, as SkyPilot does. Cloud storage, volumes, managed
secrets and multi-node tasks are refused with a TaskSpecError; `resources` are ignored.

A job runs in its own process group. Cancellation terminates the whole group (SIGTERM, then
SIGKILL after a grace period), and so does the end of the job for processes it left behind.
The job's shell gets PR_SET_PDEATHSIG (Linux), and `job.pid` lets the next run or `down` of the
cluster kill what a worker killed with SIGKILL left running.

Every job runs in a bubblewrap sandbox (worker/backends/sandbox.py): its own user, PID and mount
namespaces, an empty environment but for what the task is given, and of the machine's files only
the system's (read-only), its cluster directory and its lane's bucket (writable). Where the sandbox
cannot start the backend refuses to run jobs; SKYRUN_LOCAL_SANDBOX=off is the loud opt-out.

Stages share data through `DATA_BUCKET_URL`: unless something sets it, it is the lane's bucket
directory `<data>/buckets/<lane>` (kept between the lane's runs, pruned after
SKYRUN_LOCAL_BUCKET_IDLE_DAYS without use; a run with no lane gets its own, removed at cleanup).
The lane's scratch directory `<data>/buckets/<lane>.tmp` is the sandbox's /tmp, so stages that
pass files through /tmp (as the bundled example does) keep working across clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import getpass
import hashlib
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import yaml

from worker.backends.base import BackendError, TaskRun, TaskSpecError
from worker.backends.sandbox import HostMount, Sandbox, args_file, find_bwrap

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger(__name__)

INVALID_TASK = "invalid task YAML: {problem}"
NOT_A_MAPPING = "invalid task YAML: expected a mapping of SkyPilot task fields, got {kind}"
ENV_NOT_SET = (
    "env {name} is required by the task but has no value: set it under `envs:` in .skyrun.yaml "
    "or pass {name}=VALUE with the command"
)
MULTI_NODE = (
    "num_nodes: {num_nodes}: the local backend runs single-node tasks only; "
    "use SKYRUN_BACKEND=skypilot or num_nodes: 1"
)
CLOUD_MOUNT = (
    "file_mounts: {dest} -> {src}: cloud storage cannot be mounted by the local backend; "
    "use SKYRUN_BACKEND=skypilot or a local path"
)
MOUNT_MISSING = "file_mounts: {dest} -> {src}: {path} does not exist"
MOUNT_DEST_INVALID = "file_mounts: {dest!r}: not a destination path"
VOLUMES_UNSUPPORTED = (
    "volumes: volumes cannot be attached by the local backend; use SKYRUN_BACKEND=skypilot"
)
MANAGED_SECRETS = (
    "secrets: {names}: managed secrets cannot be resolved by the local backend; "
    "give them a value under `envs:` or use SKYRUN_BACKEND=skypilot"
)
WORKDIR_NOT_LOCAL = (
    "workdir: {workdir}: the local backend needs a directory of the repository; "
    "use a local path or SKYRUN_BACKEND=skypilot"
)
WORKDIR_MISSING = "workdir: {workdir}: {path} is not a directory"
WORKDIR_OUTSIDE = (
    "workdir: {workdir}: resolves to {path}, outside the repository checkout; "
    "use a directory of the repository (symlinks are followed)"
)
MOUNT_OUTSIDE = (
    "file_mounts: {dest} -> {src}: resolves to {path}, outside the repository checkout; "
    "the local backend mounts files of the repository only (symlinks are followed): use a path "
    "inside the repository, or SKYRUN_LOCAL_MOUNTS for a host directory every job may see"
)
CLUSTER_NOT_UP = (
    "cluster {name} is not up on this worker (local clusters live on the worker that launched them)"
)
CLUSTER_NAME_INVALID = "invalid local cluster name {name!r}"
SYNC_FAILED = "could not sync {src} to cluster {name}: {error}"
STALE_JOB_SURVIVED = "cluster {name}: process group {pgid} of an earlier job does not die"
DOWN_FAILED = "could not remove cluster {name}: {error}"

LOG_MANAGED = (
    "[skyrun] stage {stage}: managed: true is a SkyPilot managed job; the local backend runs it "
    "as an ordinary stage (no preemption recovery here)\n"
)
LOG_IGNORING_RESOURCES = "local backend: ignoring resources {resources}\n"
LOG_SETUP_FAILED = "local backend: setup failed with return code {code}; run skipped\n"
LOG_LEFTOVERS_KILLED = "local backend: stopped processes the task left running\n"
LOG_SANDBOX_OFF = (
    "[skyrun] WARNING: SKYRUN_LOCAL_SANDBOX=off: this job runs unsandboxed, as the worker's "
    "user, and can read the worker's files and secrets\n"
)
SANDBOX_OFF_WARNING = (
    "SKYRUN_LOCAL_SANDBOX=off: local jobs run UNSANDBOXED as the worker's user and can read its "
    "files, its environment and its secrets (%s); use it only on a single-user laptop"
)

SETUP_PREFIX = "(setup pid={pid}) "
RUN_PREFIX = "({name}, pid={pid}) "

WORKDIR = "sky_workdir"
MOUNT_ROOT = "root"
MOUNT_HOME = "home"
SCRIPTS = "scripts"
JOB_RECORD = "job.pid"
BUCKET_ENV = "DATA_BUCKET_URL"
BUCKET_TMP_SUFFIX = ".tmp"
OWNER_SUFFIX = ".run"
PRUNE_EVERY_S = 24 * 3600.0

# Marks every process of a job, so a recorded process group is only killed while it is ours.
_TOKEN_ENV = "SKYRUN_JOB_TOKEN"
# Settings of the worker itself that a task has no business seeing (or printing to its log).
_WORKER_SECRETS = frozenset(
    {
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_TOKEN",
        "GITHUB_APP_PRIVATE_KEY",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "TEMPORAL_API_KEY",
    }
)
# What a sandboxed job gets of the worker's environment (besides its task's envs).
_SANDBOX_PASSED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CHUNK = 64 * 1024
_DRAIN_SECONDS = 1.0
_POLL_SECONDS = 0.05
_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


@dataclass(frozen=True)
class _Mount:
    dest: str
    target: PurePosixPath
    """Where the source goes, relative to the cluster directory."""
    source: Path


@dataclass(frozen=True)
class _Spec:
    """What the local backend needs of a parsed, validated task."""

    name: str | None
    setup: str | None
    run: str | None
    envs: dict[str, str]
    workdir: Path
    mounts: tuple[_Mount, ...]
    resources: str
    """The ignored `resources` as one line, or "" when the task asks for none."""


@dataclass(frozen=True)
class _Job:
    pgid: int
    token: str


class LocalBackend:
    """Runs tasks as process groups on this machine, one directory per cluster."""

    name = "local"

    def __init__(
        self,
        clusters_dir: Path,
        *,
        kill_grace_seconds: float = 5.0,
        sandbox: bool = True,
        buckets_dir: Path | None = None,
        hidden: Iterable[Path] = (),
        mounts: Iterable[HostMount] = (),
        bucket_idle_days: float = 7.0,
    ) -> None:
        """`clusters_dir` is `<data>/clusters`; the data dir, the worker's `.env` and `hidden`
        are kept from the jobs, `mounts` opened to them (read-only unless writable)."""
        self.clusters_dir = clusters_dir.absolute()  # cwd and script paths of the jobs
        self.kill_grace_seconds = kill_grace_seconds
        self.sandboxed = sandbox
        self.buckets_dir = (buckets_dir or self.clusters_dir.parent / "buckets").absolute()
        self.bucket_idle_days = bucket_idle_days
        self.mounts = tuple(mounts)
        self.hidden = (
            self.clusters_dir.parent,
            self.buckets_dir,
            Path.cwd() / ".env",
            *hidden,
        )
        self._sandbox: Sandbox | None = None
        self._active_buckets: dict[Path, int] = {}
        self._pruned_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        """The backend a worker runs with: settings' data dir, sandbox, mounts and secrets."""
        hidden = [
            settings.logs_dir,
            settings.github_app_private_key_path,
            settings.temporal_tls_cert_path,
            settings.temporal_tls_key_path,
            settings.temporal_tls_ca_path,
        ]
        backend = cls(
            settings.data_path / "clusters",
            sandbox=settings.local_sandbox,
            hidden=[path.expanduser() for path in hidden if path is not None],
            mounts=[HostMount(path, writable) for path, writable in settings.local_mount_specs],
            bucket_idle_days=settings.local_bucket_idle_days,
        )
        if not settings.local_sandbox:
            log.warning(SANDBOX_OFF_WARNING, ", ".join(sorted(_WORKER_SECRETS)))
        return backend

    async def validate(self, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> None:
        await asyncio.to_thread(_parse, task_yaml, envs, checkout_dir)
        await self._ready_sandbox()

    async def check_sandbox(self) -> None:
        """Raise SandboxUnavailable (saying why and how to fix it) if jobs cannot be sandboxed."""
        await self._ready_sandbox()

    async def run(self, task: TaskRun, log: BinaryIO) -> int:
        spec = await asyncio.to_thread(_parse, task.task_yaml, task.envs, task.checkout_dir)
        sandbox = await self._ready_sandbox()
        await self._maybe_prune()
        cluster = self._cluster_dir(task.cluster_name)
        await self._kill_recorded(cluster)
        if task.launch:
            await asyncio.to_thread(cluster.mkdir, parents=True, exist_ok=True)
        elif not await asyncio.to_thread(cluster.is_dir):
            raise BackendError(CLUSTER_NOT_UP.format(name=task.cluster_name))
        await asyncio.to_thread(_write_owner, cluster, ClusterOwner(task.run_id, task.stage))
        if sandbox is None:
            _write(log, LOG_SANDBOX_OFF.encode())
        if task.managed:
            _write(log, LOG_MANAGED.format(stage=task.stage).encode())
        if spec.resources:
            _write(log, LOG_IGNORING_RESOURCES.format(resources=spec.resources).encode())
        bucket = self.bucket_dir(task.lane, task.run_id)
        self._active_buckets[bucket] = self._active_buckets.get(bucket, 0) + 1
        try:
            return await self._run(task, spec, cluster, bucket, sandbox, log)
        finally:
            self._active_buckets[bucket] -= 1
            if not self._active_buckets[bucket]:
                del self._active_buckets[bucket]
            with contextlib.suppress(OSError):
                os.utime(bucket)  # last used: the idle time counts from here

    async def _run(
        self,
        task: TaskRun,
        spec: _Spec,
        cluster: Path,
        bucket: Path,
        sandbox: Sandbox | None,
        log: BinaryIO,
    ) -> int:
        await asyncio.to_thread(_make_bucket, bucket)
        if sandbox is not None:  # the job's HOME
            await asyncio.to_thread((cluster / MOUNT_HOME).mkdir, exist_ok=True)
        await self._sync(spec.workdir, cluster / WORKDIR, task.cluster_name)
        if task.launch:
            for mount in spec.mounts:
                await self._sync(mount.source, cluster / mount.target, task.cluster_name)

        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
        task_id = f"sky-{stamp}_{task.cluster_name}_{task.stage}"
        env = _base_env(spec.envs, cluster, sandboxed=sandbox is not None)
        if not env.get(BUCKET_ENV):
            env[BUCKET_ENV] = str(bucket)
        binds = [(cluster, cluster), (bucket, bucket)]
        tmp = _bucket_tmp(bucket)  # the job's /tmp: the lane's scratch, shared by its stages
        common = {
            "SKYPILOT_TASK_ID": task_id,
            "SKYPILOT_CLUSTER_INFO": json.dumps(
                {"cluster_name": task.cluster_name, "cloud": "Local", "region": None, "zone": None}
            ),
            "SKYPILOT_USER": _user_name(),
            "SKYPILOT_NUM_NODES": "1",
        }
        if task.launch and spec.setup is not None:
            setup_env = {
                **env,
                **common,
                "SKYPILOT_SETUP_NODE_IPS": "127.0.0.1",
                "SKYPILOT_SETUP_NODE_RANK": "0",
                "SKYPILOT_SETUP_NUM_GPUS_PER_NODE": "0",
            }
            script = await self._write_script(cluster, f"{task_id}-setup", spec.setup)
            if task.setup_started is not None:
                task.setup_started()
            code = await self._execute(
                cluster, script, setup_env, SETUP_PREFIX, log, sandbox, binds, tmp
            )
            if code != 0:
                _write(log, LOG_SETUP_FAILED.format(code=code).encode())
                return code
        if spec.run is None or task.provision_only:
            return 0
        run_env = {
            **env,
            **common,
            "SKYPILOT_NODE_IPS": "127.0.0.1",
            "SKYPILOT_NODE_RANK": "0",
            "SKYPILOT_NUM_GPUS_PER_NODE": "0",
        }
        script = await self._write_script(cluster, f"{task_id}-run", spec.run)
        prefix = RUN_PREFIX.format(name=spec.name or "task", pid="{pid}")
        if task.job_started is not None:
            task.job_started()
        return await self._execute(cluster, script, run_env, prefix, log, sandbox, binds, tmp)

    async def down(self, cluster_name: str) -> None:
        cluster = self._cluster_dir(cluster_name)
        if not await asyncio.to_thread(cluster.exists):
            return
        await self._kill_recorded(cluster)
        try:
            await asyncio.to_thread(_remove_tree, cluster)
            await asyncio.to_thread(_owner_file(cluster).unlink, missing_ok=True)
        except OSError as error:
            raise BackendError(DOWN_FAILED.format(name=cluster_name, error=error)) from error

    def dashboard_url(self) -> str:
        return ""

    def bucket_dir(self, lane: str, run_id: str) -> Path:
        """The lane's bucket directory (a run with no lane: its own, removed at cleanup)."""
        key = lane or f"run:{run_id}"
        slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:40].strip("-")
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        prefix = "" if lane else "run-"
        return self.buckets_dir / f"{prefix}{slug or 'lane'}-{digest}"

    async def cleanup_run(self, run_id: str) -> None:
        """Remove the bucket of a run without a lane, if it had one (a lane's bucket stays)."""
        bucket = self.bucket_dir("", run_id)
        await asyncio.to_thread(_remove_tree, bucket)
        await asyncio.to_thread(_remove_tree, _bucket_tmp(bucket))

    def prune_buckets(self, now: float | None = None) -> list[str]:
        """Remove buckets unused for SKYRUN_LOCAL_BUCKET_IDLE_DAYS; returns their names."""
        if not self.buckets_dir.is_dir():
            return []
        cutoff = (time.time() if now is None else now) - self.bucket_idle_days * 86400.0
        removed = []
        for entry in sorted(self.buckets_dir.iterdir()):
            if entry.name.endswith(BUCKET_TMP_SUFFIX) or entry in self._active_buckets:
                continue
            if not entry.is_dir() or entry.is_symlink():
                continue
            try:
                used = entry.stat().st_mtime
            except OSError:
                continue
            if used < cutoff:
                _remove_tree(entry)
                _remove_tree(_bucket_tmp(entry))
                removed.append(entry.name)
        for entry in self.buckets_dir.glob(f"*{BUCKET_TMP_SUFFIX}"):
            if not (self.buckets_dir / entry.name.removesuffix(BUCKET_TMP_SUFFIX)).exists():
                _remove_tree(entry)  # its bucket went (removed by hand): the scratch goes too
        return removed

    async def _maybe_prune(self) -> None:
        """Prune idle buckets on the first job after start, then at most once a day."""
        now = time.time()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            removed = await asyncio.to_thread(self.prune_buckets, now)
        except OSError:
            log.exception("could not prune idle lane buckets in %s", self.buckets_dir)
            return
        for name in removed:
            log.info("removed lane bucket %s: unused for %s days", name, self.bucket_idle_days)

    async def _ready_sandbox(self) -> Sandbox | None:
        """The jobs' sandbox (None when SKYRUN_LOCAL_SANDBOX=off); raises if it cannot start."""
        if not self.sandboxed:
            return None
        if self._sandbox is None:
            self._sandbox = await asyncio.to_thread(self._build_sandbox)
        return self._sandbox

    def _build_sandbox(self) -> Sandbox:
        sandbox = Sandbox(find_bwrap(), hidden=self.hidden, mounts=self.mounts)
        sandbox.probe()
        return sandbox

    def _cluster_dir(self, cluster_name: str) -> Path:
        if not _CLUSTER_NAME.fullmatch(cluster_name):
            raise ValueError(CLUSTER_NAME_INVALID.format(name=cluster_name))
        return self.clusters_dir / cluster_name

    async def _sync(self, source: Path, target: Path, cluster_name: str) -> None:
        try:
            await asyncio.to_thread(_sync_tree, source, target)
        except OSError as error:
            raise BackendError(
                SYNC_FAILED.format(src=source, name=cluster_name, error=error)
            ) from error

    async def _write_script(self, cluster: Path, name: str, body: str) -> Path:
        path = cluster / SCRIPTS / f"{name}.sh"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")

        await asyncio.to_thread(write)
        return path

    async def _execute(
        self,
        cluster: Path,
        script: Path,
        env: dict[str, str],
        prefix: str,
        log: BinaryIO,
        sandbox: Sandbox | None = None,
        binds: Sequence[tuple[Path, Path]] = (),
        tmp: Path | None = None,
    ) -> int:
        """Run one script as its own process group, streaming its output into `log`."""
        token = secrets.token_hex(16)
        job_env = {**env, _TOKEN_ENV: token}
        workdir = cluster / WORKDIR
        fds: tuple[int, ...] = ()
        with contextlib.ExitStack() as stack:
            if sandbox is None:
                argv, proc_env = [_bash(), str(script)], job_env
            else:
                args = sandbox.args(writable=binds, cwd=workdir, env=job_env, tmp=tmp)
                fd = stack.enter_context(args_file(args))
                argv = sandbox.command(fd, ["bash", str(script)])
                proc_env, fds = {_TOKEN_ENV: token}, (fd,)
            proc = await self._spawn(argv, proc_env, fds, workdir, cluster, token)
        return await self._follow(proc, _Job(pgid=proc.pid, token=token), cluster, prefix, log)

    async def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        fds: tuple[int, ...],
        workdir: Path,
        cluster: Path,
        token: str,
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=fds,
                preexec_fn=_child_setup(cluster / JOB_RECORD, token),
            )
        except BaseException:
            # Cancelled while asyncio set the process up: it kills the shell, not its group.
            started = _read_record(cluster)
            if started is not None and started.token == token:
                _signal_group(started.pgid, signal.SIGKILL)
                _clear_record(cluster, started)
            raise

    async def _follow(
        self, proc: asyncio.subprocess.Process, job: _Job, cluster: Path, prefix: str, log: BinaryIO
    ) -> int:
        assert proc.stdout is not None
        pump = asyncio.create_task(_pump(proc.stdout, log, prefix.format(pid=proc.pid).encode()))
        exited = asyncio.create_task(_exited(proc))
        try:
            await asyncio.wait({pump, exited}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # the log cannot be written: stop the job rather than block it
            code = await exited
            # The job is over when its shell exits; as SkyPilot does, stop what it left running
            # (background processes, possibly still holding the output pipe open).
            await asyncio.wait({pump}, timeout=_DRAIN_SECONDS)
            leftovers = not pump.done() or await asyncio.to_thread(_group_alive, job)
            if leftovers:
                await self._terminate(job, proc)
                # Only a process that left the group (setsid) can still hold the pipe now.
                await asyncio.wait({pump}, timeout=_DRAIN_SECONDS)
            if pump.done():
                pump.result()
            else:
                pump.cancel()
            if leftovers:
                _write(log, LOG_LEFTOVERS_KILLED.encode())
        except BaseException:
            pump.cancel()
            exited.cancel()
            await asyncio.gather(pump, exited, return_exceptions=True)
            await self._terminate(job, proc)
            raise
        finally:
            _clear_record(cluster, job)
        return code

    async def _terminate(self, job: _Job, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the job's process group, SIGKILL what is left after the grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kill_grace_seconds
        stopped = False
        try:
            # Not the sandbox's own processes: bwrap dying on SIGTERM would SIGKILL the job at
            # once (its PID namespace ends), with no grace period to stop cleanly.
            await asyncio.to_thread(_signal_job, job, signal.SIGTERM, _SANDBOX_COMM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_exited(proc), self.kill_grace_seconds)
            stopped = await self._wait_gone(job, deadline - loop.time())
        finally:
            # Also when this cleanup is itself cancelled: nothing of the job may outlive it.
            if not stopped:
                _signal_group(job.pgid, signal.SIGKILL)
        await _exited(proc)

    async def _kill_recorded(self, cluster: Path) -> None:
        """Kill the job recorded for `cluster` if it still runs (its worker died with it)."""
        job = await asyncio.to_thread(_read_record, cluster)
        if job is None:
            return
        if await asyncio.to_thread(_group_alive, job):
            _signal_group(job.pgid, signal.SIGKILL)
            if not await self._wait_gone(job, max(self.kill_grace_seconds, 5.0)):
                raise BackendError(STALE_JOB_SURVIVED.format(name=cluster.name, pgid=job.pgid))
        _clear_record(cluster, job)

    async def _wait_gone(self, job: _Job, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while await asyncio.to_thread(_group_alive, job):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True


@dataclass(frozen=True)
class ClusterOwner:
    """The run and stage that last used a cluster (for the reaper and its note in the log)."""

    run_id: str
    stage: str


def read_owner(clusters_dir: Path, cluster_name: str) -> ClusterOwner | None:
    """Who last used the cluster, or None (not recorded: a cluster of an older skyrun)."""
    try:
        data = json.loads(_owner_file(clusters_dir / cluster_name).read_text(encoding="utf-8"))
        return ClusterOwner(run_id=str(data["run_id"]), stage=str(data["stage"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _owner_file(cluster: Path) -> Path:
    # Next to the cluster directory, not in it: a job can write its cluster, not this.
    return cluster.with_name(cluster.name + OWNER_SUFFIX)


def _write_owner(cluster: Path, owner: ClusterOwner) -> None:
    path = _owner_file(cluster)
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(json.dumps({"run_id": owner.run_id, "stage": owner.stage}) + "\n")
    os.replace(temporary, path)


def list_clusters(clusters_dir: Path) -> list[str]:
    """Names of the local clusters that are up (launched and not yet downed)."""
    if not clusters_dir.is_dir():
        return []
    return sorted(entry.name for entry in clusters_dir.iterdir() if entry.is_dir())


# --- parsing -------------------------------------------------------------------------------------


def _parse(task_yaml: str, overrides: dict[str, str], checkout_dir: Path) -> _Spec:
    """Parse the task with SkyPilot's own parser and check what the local backend can run."""
    import sky  # slow (seconds) the first time: callers run this in a thread
    from sky.utils import yaml_utils

    try:
        yaml_utils.check_no_duplicate_keys(task_yaml)
        config = yaml_utils.safe_load(task_yaml)
    except (yaml.YAMLError, ValueError) as error:
        raise TaskSpecError(INVALID_TASK.format(problem=error)) from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TaskSpecError(NOT_A_MAPPING.format(kind=type(config).__name__))
    task_envs = config.get("envs")
    if isinstance(task_envs, dict):
        for key, value in {**task_envs, **overrides}.items():
            if value is None:
                raise TaskSpecError(ENV_NOT_SET.format(name=key))
    raw: dict[str, Any] = copy.deepcopy(config)
    try:
        task: Any = sky.Task.from_yaml_config(config, env_overrides=list(overrides.items()))
        task.validate_name()
    except Exception as error:  # SkyPilot reports a bad task as ValueError, assert, ...
        problem = re.sub(r"^invalid task yaml: ", "", str(error), flags=re.IGNORECASE)
        raise TaskSpecError(INVALID_TASK.format(problem=problem)) from None

    if task.num_nodes > 1:
        raise TaskSpecError(MULTI_NODE.format(num_nodes=task.num_nodes))
    if raw.get("volumes") or getattr(task, "volumes", None):
        raise TaskSpecError(VOLUMES_UNSUPPORTED)
    raw_mounts = raw.get("file_mounts") or {}
    for dest, src in raw_mounts.items():
        if isinstance(src, dict):  # a bucket or a volume
            shown = src.get("source") or src.get("name") or src.get("store") or "storage"
            raise TaskSpecError(CLOUD_MOUNT.format(dest=dest, src=shown))
    for dest, storage in (task.storage_mounts or {}).items():
        shown = storage.source or storage.name
        raise TaskSpecError(CLOUD_MOUNT.format(dest=dest, src=shown))
    refs = list(getattr(task, "managed_secret_refs", None) or [])
    if refs:
        names = ", ".join(str(getattr(ref, "name", ref)) for ref in refs)
        raise TaskSpecError(MANAGED_SECRETS.format(names=names))

    mounts = tuple(
        _resolve_mount(str(dest), str(src), checkout_dir)
        for dest, src in (task.file_mounts or {}).items()
    )
    resources = raw.get("resources")
    return _Spec(
        name=task.name,
        setup=task.setup,
        run=task.run,
        envs={
            key: value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            for key, value in task.envs_and_secrets.items()
        },
        workdir=_resolve_workdir(task.workdir, checkout_dir),
        mounts=mounts,
        resources=json.dumps(resources, sort_keys=True, default=str) if resources else "",
    )


def _resolve_workdir(workdir: object, checkout_dir: Path) -> Path:
    if workdir is None:
        return checkout_dir
    if isinstance(workdir, dict):
        shown = workdir.get("url") or json.dumps(workdir, default=str)
        raise TaskSpecError(WORKDIR_NOT_LOCAL.format(workdir=shown))
    text = str(workdir)
    if "://" in text:
        raise TaskSpecError(WORKDIR_NOT_LOCAL.format(workdir=text))
    path = checkout_dir / os.path.expanduser(text)
    real = _inside(path, checkout_dir)
    if real is None:
        raise TaskSpecError(WORKDIR_OUTSIDE.format(workdir=text, path=os.path.realpath(path)))
    if not real.is_dir():
        raise TaskSpecError(WORKDIR_MISSING.format(workdir=text, path=path))
    return real


def _resolve_mount(dest: str, src: str, checkout_dir: Path) -> _Mount:
    if "://" in src:
        raise TaskSpecError(CLOUD_MOUNT.format(dest=dest, src=src))
    source = checkout_dir / os.path.expanduser(src)
    if src.startswith("skypilot:"):
        raise TaskSpecError(MOUNT_MISSING.format(dest=dest, src=src, path=source))
    real = _inside(source, checkout_dir)
    if real is None:
        shown = os.path.realpath(source)
        raise TaskSpecError(MOUNT_OUTSIDE.format(dest=dest, src=src, path=shown))
    if not real.exists():
        raise TaskSpecError(MOUNT_MISSING.format(dest=dest, src=src, path=source))
    return _Mount(dest=dest, target=_mount_target(dest), source=real)


def _inside(path: Path, checkout_dir: Path) -> Path | None:
    """`path` with every symlink followed, if that stays inside the checkout; else None."""
    root = Path(os.path.realpath(checkout_dir))
    real = Path(os.path.realpath(path))
    if real == root or root in real.parents:
        return real
    return None


def _mount_target(dest: str) -> PurePosixPath:
    """Map a destination on a SkyPilot node into the cluster directory (never outside it)."""
    if dest == "~" or dest.startswith("~/"):
        parts = PurePosixPath(posixpath.normpath("/" + dest[1:])).parts[1:]
        if parts[:1] == (WORKDIR,):
            return PurePosixPath(*parts)
        return PurePosixPath(MOUNT_HOME, *parts)
    if dest.startswith("/"):
        return PurePosixPath(MOUNT_ROOT, *PurePosixPath(posixpath.normpath(dest)).parts[1:])
    # SkyPilot puts a relative destination under the workdir.
    parts = PurePosixPath(posixpath.normpath("/" + dest)).parts[1:]
    if not parts:
        raise TaskSpecError(MOUNT_DEST_INVALID.format(dest=dest))
    return PurePosixPath(WORKDIR, *parts)


# --- processes -----------------------------------------------------------------------------------


def _base_env(task_envs: dict[str, str], cluster: Path, *, sandboxed: bool) -> dict[str, str]:
    if sandboxed:  # nothing of the worker's environment but what finds programs and text
        env = {key: os.environ[key] for key in _SANDBOX_PASSED if key in os.environ}
        env.setdefault("PATH", os.defpath)
        env["HOME"] = str((cluster / MOUNT_HOME).absolute())
        env["USER"] = env["LOGNAME"] = "skyrun"
    else:
        env = {key: value for key, value in os.environ.items() if key not in _WORKER_SECRETS}
    env["PYTHONUNBUFFERED"] = "1"  # as SkyPilot's job script does, so logs stream
    env.update(task_envs)
    env["SKYRUN_MOUNT_ROOT"] = str((cluster / MOUNT_ROOT).absolute())
    env["SKYRUN_MOUNT_HOME"] = str((cluster / MOUNT_HOME).absolute())
    return env


def _bash() -> str:
    return shutil.which("bash") or "/bin/bash"


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved in the parent: the child, between fork and exec, only makes the call.
_PRCTL = _load_prctl()


def _child_setup(record: Path, token: str) -> Callable[[], None]:
    """What the job's shell does between fork and exec, before any of the task can run."""
    parent = os.getpid()
    path = str(record)
    token_bytes = token.encode()

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL)  # die with the worker (Linux)
            if os.getppid() != parent:  # the worker died before that
                os._exit(1)
        # Recorded here, not after the spawn returns: a worker killed in between leaks nothing.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"%d %s\n" % (os.getpid(), token_bytes))
        finally:
            os.close(fd)

    return setup


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The shell's exit status as soon as it exits.

    Not `Process.wait()`: on Python 3.11 that also waits until every process holding the output
    pipe (a background job of the task) has closed it.
    """
    while proc.returncode is None:
        await asyncio.sleep(_POLL_SECONDS)
    return proc.returncode


async def _pump(stream: asyncio.StreamReader, log: BinaryIO, prefix: bytes) -> None:
    """Copy output into `log` as it comes, each line prefixed the way SkyPilot does."""
    at_line_start = True
    while chunk := await stream.read(_CHUNK):
        data, at_line_start = _prefix_lines(chunk, prefix, at_line_start)
        _write(log, data)
    if not at_line_start:
        _write(log, b"\n")


def _prefix_lines(chunk: bytes, prefix: bytes, at_line_start: bool) -> tuple[bytes, bool]:
    out = bytearray()
    for line in _split_lf(chunk):
        if at_line_start:
            out += prefix
        out += line
        at_line_start = line.endswith(b"\n")
    return bytes(out), at_line_start


def _split_lf(chunk: bytes) -> list[bytes]:
    """Split after each LF only: a progress bar's CR does not start a new log line."""
    lines = [line + b"\n" for line in chunk.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return [line for line in lines if line]


def _write(log: BinaryIO, data: bytes) -> None:
    log.write(data)
    log.flush()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


_SANDBOX_COMM = b"bwrap"


def _signal_job(job: _Job, signum: signal.Signals, spare: bytes) -> None:
    """Signal every process of the job's group but those named `spare` (the sandbox's)."""
    proc = Path("/proc")
    if not proc.is_dir():
        _signal_group(job.pgid, signum)
        return
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (proc / entry.name / "stat").read_bytes().rsplit(b")", 1)
            if int(tail.split()[2]) != job.pgid or head.split(b"(", 1)[1] == spare:
                continue
            os.kill(int(entry.name), signum)
        except (OSError, ValueError, IndexError):
            continue


def _group_alive(job: _Job) -> bool:
    """Whether a live (non-zombie) process of `job` is still in its process group."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs (macOS): trust the group id
        try:
            os.killpg(job.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    needle = f"{_TOKEN_ENV}={job.token}".encode()
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            fields = (proc / entry.name / "stat").read_bytes().rsplit(b")", 1)[1].split()
            if int(fields[2]) != job.pgid or fields[0] == b"Z":
                continue
            if needle in (proc / entry.name / "environ").read_bytes().split(b"\0"):
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def _read_record(cluster: Path) -> _Job | None:
    try:
        pgid, token = (cluster / JOB_RECORD).read_text(encoding="utf-8").split()
        return _Job(pgid=int(pgid), token=token)
    except (OSError, ValueError):
        return None


def _clear_record(cluster: Path, job: _Job) -> None:
    if _read_record(cluster) == job:
        with contextlib.suppress(FileNotFoundError):
            (cluster / JOB_RECORD).unlink()


# --- files ---------------------------------------------------------------------------------------


def _bucket_tmp(bucket: Path) -> Path:
    return bucket.with_name(bucket.name + BUCKET_TMP_SUFFIX)


def _make_bucket(bucket: Path) -> None:
    bucket.mkdir(parents=True, exist_ok=True)
    os.utime(bucket)  # in use: no worker prunes it while its job runs (also touched at the end)
    _bucket_tmp(bucket).mkdir(exist_ok=True)
    os.chmod(_bucket_tmp(bucket), 0o1777)  # /tmp in the sandbox: sticky, as /tmp is


def _sync_tree(source: Path, target: Path) -> None:
    """Copy `source` onto `target` like `rsync -a` without `--delete`: extra files stay."""
    if source.is_dir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _remove(target)
        target.mkdir(parents=True, exist_ok=True)
        with os.scandir(source) as entries:
            for entry in entries:
                _sync_entry(entry, target / entry.name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_file(source, target)


def _sync_entry(entry: os.DirEntry[str], target: Path) -> None:
    if entry.is_symlink():
        link = os.readlink(entry.path)
        if target.is_symlink() and os.readlink(target) == link:
            return
        if target.is_symlink() or target.exists():
            _remove(target)
        os.symlink(link, target)
    elif entry.is_dir(follow_symlinks=False):
        _sync_tree(Path(entry.path), target)
    elif entry.is_file(follow_symlinks=False):
        _copy_file(Path(entry.path), target)
    # Sockets, FIFOs and devices are not copied (reading a FIFO would block).


def _copy_file(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        if not target.is_symlink() and target.is_file():
            have, want = target.stat(), source.stat()
            if have.st_size == want.st_size and have.st_mtime_ns == want.st_mtime_ns:
                return  # rsync's quick check: unchanged since the last sync
        _remove(target)
    shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _remove_tree(path)
    else:
        path.unlink()


def _remove_tree(path: Path) -> None:
    """`rm -rf`, also through read-only directories a task created (Go and pip caches do)."""

    def retry_writable(func: Callable[..., object], failed: str, _exc: object) -> None:
        parent = os.path.dirname(failed)
        with contextlib.suppress(OSError):
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
        with contextlib.suppress(FileNotFoundError):
            if func is os.rmdir or func is os.unlink or func is os.remove:
                func(failed)
            else:  # os.scandir / os.open on an unreadable directory
                os.chmod(failed, os.stat(failed).st_mode | stat.S_IRWXU)
                shutil.rmtree(failed, onerror=retry_writable)

    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path, onerror=retry_writable)
