"""Runs stages as SkyPilot tasks (SKYRUN_BACKEND=skypilot), optionally through an API server.

`sky` is imported lazily on first use (it takes seconds, and the bot must never import it), and
every SDK call blocks on HTTP, so each one runs in a thread via `asyncio.to_thread`.

A `managed: true` stage runs as a SkyPilot managed job named after the stage's cluster
(`sky.jobs.launch`): the jobs controller provisions its cluster and recovers it from preemption;
skyrun follows its log, maps its final state from `sky.jobs.queue_v2` and cancels it
(`sky.jobs.cancel`) on cancellation and in `down`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from worker.backends.base import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    BackendError,
    InfraError,
    TaskRun,
    TaskSpecError,
)
from worker.contract import INFRA_CAUSES, InfraCause
from worker.limits import bounded

logger = logging.getLogger(__name__)

# The variable SkyPilot 0.14.1 reads the API server URL from (sky/server/common.py
# get_server_url). The SDK has no per-call endpoint and caches the URL process-wide, so the
# endpoint is pinned once per process, before the first SDK call.
ENDPOINT_ENV = "SKYPILOT_API_SERVER_ENDPOINT"
# Where SkyPilot's API server serves its dashboard (sky/server/common.py get_dashboard_url).
DASHBOARD_PATH = "/dashboard"
# Prefix of every cluster skyrun names (see base.cluster_name_for).
CLUSTER_PREFIX = "sr-"
# How long a failed job's cluster may take to say whether it is still there (a loaded API server
# needs a while); past it the failure counts as the task's.
HEALTH_TIMEOUT_SECONDS = 180.0
# How long cancellation waits for SkyPilot to stop a request or job before giving up on it.
CANCEL_TIMEOUT_SECONDS = 60.0
# Longest server message kept in an error (errors travel through Temporal and onto PRs); with
# the texts around it, an error stays under worker.limits.MAX_ERROR_CHARS.
MAX_MESSAGE_CHARS = 2000
# Of those, the last ones kept when a message is cut: where SkyPilot says what is wrong.
KEEP_END_CHARS = 300

# User-facing texts: errors (shown on the PR / in Slack) and lines written into the stage log.
MSG_YAML_INVALID = "The task YAML is not valid YAML: {error}"
MSG_YAML_NOT_MAPPING = "The task YAML must be a mapping of SkyPilot task fields, not {kind}."
MSG_TASK_INVALID = "SkyPilot rejected the task: {error}"
MSG_AT_FIELD = "field `{field}`: {error}"
MSG_MISSING_ENVS = (
    "The task needs a value for {names}: set it in the pipeline's `envs:` or pass it as "
    "KEY=VALUE with the command."
)
MSG_OUTSIDE_CHECKOUT = (
    "`{field}` points at {path!r}, outside the repository; local paths in a task must stay "
    "inside the repository (use a bucket URL for other data)."
)
MSG_NO_CLOUD = (
    "No cloud is enabled on the SkyPilot API server, so nothing can be launched; an operator "
    "must set up cloud credentials (`sky check`) before re-running. SkyPilot said: {error}"
)
MSG_NO_RESOURCES = (
    "No enabled cloud offers the resources the task asks for; change `resources:` in the task "
    "or enable a cloud that has them. SkyPilot said: {error}"
)
MSG_CLUSTER_NOT_UP = (
    "Cluster {cluster} is not up (it was not launched, failed to launch or was already torn "
    "down). SkyPilot said: {error}"
)
MSG_BACKEND_FAILED = "SkyPilot failed to {action}: {error}"
MSG_ENDPOINT_CONFLICT = (
    "This process already uses SkyPilot API server {current}; one process talks to one server."
)
LOG_LAUNCHING = "[skyrun] launching cluster {cluster} (SkyPilot request {request_id})\n"
LOG_EXECUTING = "[skyrun] running on cluster {cluster} (SkyPilot request {request_id})\n"
LOG_JOB_STARTED = "[skyrun] job {job_id} submitted on cluster {cluster}; its output follows\n"
LOG_NO_JOB = "[skyrun] the task has no `run` commands: nothing to run\n"
LOG_SETUP_JOB = (
    "[skyrun] cluster {cluster} is up; SkyPilot runs its setup as job {job_id}, whose output "
    "follows\n"
)
LOG_CANCELLING = "[skyrun] cancelled: stopping the SkyPilot request and job\n"
# Managed jobs (`managed: true`): the jobs controller runs the task on a cluster of its own and
# recovers it from preemption by itself; skyrun follows it and maps its final state.
LOG_MANAGED_LAUNCHING = (
    "[skyrun] launching managed job {name} (SkyPilot request {request_id}); the jobs controller "
    "provisions its cluster and recovers it from preemption\n"
)
LOG_MANAGED_STARTED = "[skyrun] managed job {job_id} ({name}) submitted; its output follows\n"
LOG_MANAGED_STREAM_BROKE = (
    "[skyrun] the log stream of managed job {job_id} broke ({error}); asking SkyPilot for its "
    "state\n"
)
LOG_MANAGED_ENDED = "[skyrun] managed job {job_id} ended {status}{recoveries}\n"
LOG_MANAGED_RECOVERIES = " after {count} recoveries by the jobs controller"
LOG_MANAGED_SETUP_FAILED = (
    "[skyrun] managed job {job_id}: its setup failed (FAILED_SETUP), so its run commands never "
    "started; fix the task's `setup:` (its output is above){reason}\n"
)
LOG_MANAGED_REASON = ": {reason}"
MSG_MANAGED_PRECHECKS = (
    "SkyPilot refused to start managed job {name} (FAILED_PRECHECKS: no enabled cloud offers "
    "the task's resources, or a precheck failed); change `resources:` in the task or ask an "
    "operator to enable a cloud that has them. SkyPilot said: {reason}"
)
MSG_MANAGED_NO_RESOURCE = (
    "managed job {name} found no capacity for its resources (FAILED_NO_RESOURCE): {reason}"
)
MSG_MANAGED_CONTROLLER = (
    "the jobs controller failed managed job {name} (FAILED_CONTROLLER), not the task: {reason}"
)
MSG_MANAGED_STREAM_LOST = (
    "lost the log stream of managed job {job_id} ({name}) while it was {status}; it was "
    "cancelled so that the stage can start again: {error}"
)
MSG_MANAGED_UNSETTLED = (
    "managed job {job_id} ({name}) was still {status} {seconds:.0f} s after its log ended; it "
    "was cancelled. Look at `sky jobs queue` and `sky jobs logs --controller {job_id}`."
)
MSG_MANAGED_NOT_FOUND = "managed job {job_id} ({name}) is not in SkyPilot's jobs queue"
MSG_MANAGED_NO_ID = "SkyPilot accepted managed job {name} but returned no job id"
MSG_MANAGED_NOT_STOPPED = (
    "managed job(s) {job_ids} ({name}) did not stop within {seconds:.0f} s of being cancelled; "
    "check `sky jobs queue` and cancel them with `sky jobs cancel {job_ids_arg}`"
)
MSG_MANAGED_LOOKUP_FAILED = (
    "could not look up managed jobs named {name} in SkyPilot's jobs queue: {error}"
)
MSG_NO_REASON = "SkyPilot gave no reason"
MSG_CLUSTER_LOST = "cluster {cluster} is {status} after its job ended (code {code}): {cause}"
MSG_CLUSTER_LOST_STREAM = (
    "cluster {cluster} is {status} and its job stream broke ({error}): {cause}"
)

# The task's own exit status, which SkyPilot's `tail_logs` does not give (it says 100 for any
# failure): the run commands are wrapped in a subshell and the status printed after it.
EXIT_MARKER = "::skyrun-exit-code"
_EXIT_LINE = re.compile(rf"{re.escape(EXIT_MARKER)} (-?\d{{1,4}})\s*$")
RUN_WRAPPER = (
    f'(\n{{run}}\n)\n__skyrun_exit=$?\necho "{EXIT_MARKER} $__skyrun_exit"\nexit $__skyrun_exit\n'
)
# How long a managed job may take to reach a final state after its log ended (the controller
# records it, then tears the job's cluster down), and how often its state is asked for.
MANAGED_SETTLE_SECONDS = 180.0
MANAGED_POLL_SECONDS = 2.0
# How long a cancelled managed job may take to be CANCELLED (its cluster torn down).
MANAGED_CANCEL_SECONDS = 300.0
# Fields asked of the jobs queue (a small record; the default set has no failure reason).
_MANAGED_FIELDS = ["job_id", "task_id", "job_name", "status", "failure_reason", "recovery_count"]
# ManagedJobStatus values (sky/jobs/state.py), compared as text so that no sky import is needed.
_MANAGED_SUCCEEDED = "SUCCEEDED"
_MANAGED_CANCELLED = "CANCELLED"
_MANAGED_FAILED = "FAILED"
_MANAGED_FAILED_SETUP = "FAILED_SETUP"
_MANAGED_FAILED_PRECHECKS = "FAILED_PRECHECKS"
_MANAGED_FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"
_MANAGED_FAILED_CONTROLLER = "FAILED_CONTROLLER"
_MANAGED_TERMINAL = frozenset(
    {
        _MANAGED_SUCCEEDED,
        _MANAGED_CANCELLED,
        _MANAGED_FAILED,
        _MANAGED_FAILED_SETUP,
        _MANAGED_FAILED_PRECHECKS,
        _MANAGED_FAILED_NO_RESOURCE,
        _MANAGED_FAILED_CONTROLLER,
    }
)
# Cluster states in which a failed job counts as the task's own failure.
_GONE = "gone"
_JOB_GONE = "without the job"
_UNREACHABLE = "unreachable"
# Raised by the API server when the command it ran on the cluster failed: the node is gone.
_UNREACHABLE_ERRORS = frozenset({"CommandError", "ClusterSetUpError"})
# The job status SkyPilot gives when the job's driver died with its node, not by the task.
_DRIVER_FAILED = "FAILED_DRIVER"

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+):[^/\s@]+@")
_URL_USERINFO = re.compile(r"://[^/\s@]*@")
_SECRET_ENV_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|PRIVATE_KEY|AUTH", re.I)
_LOCAL_PATH_SKIP = ("~", "$", "skypilot:")
# SkyPilot's schema errors end with the JSON path of the field at fault (sky/utils/common_utils.py
# validate_schema); it goes first, so cutting a long message never loses it.
_FIELD_AT_END = re.compile(r"\.?\s*Check problematic field\(s\): \$\.?(\S*)\s*$")

# Exceptions whose cause is the task (what it asks for), not the backend: not worth retrying.
_USER_ERRORS = frozenset(
    {
        "InvalidSkyPilotConfigError",
        "StorageSpecError",
        "ResourcesMismatchError",
        "NotSupportedError",
        "UserRequestRejectedByPolicy",
        "ValueError",
    }
)
_CLUSTER_STATE_ERRORS = frozenset({"ClusterDoesNotExist", "ClusterNotUpError"})
# Lost connections (to the API server or, through it, to the cluster): infrastructure.
_CONNECTION_ERRORS = frozenset(
    {
        "ApiServerConnectionError",
        "ConnectionError",
        "ChunkedEncodingError",
        "Timeout",
        "NetworkError",
        "FetchClusterInfoError",
        "ClusterStatusFetchingError",
    }
)
_TRANSIENT_RESOURCE_ERRORS = frozenset({"KubeAPIUnreachableError"})
_BUILD_ERRORS = (ValueError, TypeError, KeyError, AssertionError)

_sdk_lock = threading.Lock()
_pinned_endpoint: str | None = None


class SkyPilotBackend:
    """Compute backend on SkyPilot: launch/exec a stage's task, follow its job, tear down."""

    name = "skypilot"

    def __init__(
        self,
        api_server_endpoint: str | None = None,
        sdk: Any | None = None,
        *,
        managed_poll_seconds: float = MANAGED_POLL_SECONDS,
        managed_settle_seconds: float = MANAGED_SETTLE_SECONDS,
        managed_cancel_seconds: float = MANAGED_CANCEL_SECONDS,
    ) -> None:
        self._endpoint = api_server_endpoint.rstrip("/") if api_server_endpoint else None
        self._sdk = sdk
        # In-flight launch/exec request per cluster, so `down` can cancel a launch still running.
        self._requests: dict[str, str] = {}
        # Names of the managed jobs this process launched: `down` of one must see the jobs queue.
        self._managed_names: set[str] = set()
        self._poll = managed_poll_seconds
        self._settle = managed_settle_seconds
        self._cancel_wait = managed_cancel_seconds

    # -- ComputeBackend -------------------------------------------------------------------------

    async def validate(self, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> None:
        sky = await self._sky()
        await asyncio.to_thread(_build_task, sky, task_yaml, envs, checkout_dir)

    async def run(self, task: TaskRun, log: BinaryIO) -> int:
        sky = await self._sky()
        if task.managed:
            return await self._run_managed(sky, task, log)
        cluster = task.cluster_name
        secrets = _secret_values(task.task_yaml, task.envs)
        stream = _LogStream(log)
        request_id: str | None = None
        job_id: int | None = None
        try:
            sky_task = await asyncio.to_thread(
                _build_task, sky, task.task_yaml, task.envs, task.checkout_dir
            )
            if task.provision_only:
                sky_task.run = None  # launch and set up; the job comes later with an exec
            request_id = await self._submit(sky, sky_task, task)
            self._requests[cluster] = request_id
            template = LOG_LAUNCHING if task.launch else LOG_EXECUTING
            stream.write(template.format(cluster=cluster, request_id=request_id))
            job_id, _handle = await asyncio.to_thread(
                sky.stream_and_get, request_id, output_stream=stream
            )
            request_id = None
            self._requests.pop(cluster, None)
            if job_id is None:
                # Provisioned with no setup to run (the activity says so), or no `run` at all.
                if not task.provision_only:
                    stream.write(LOG_NO_JOB)
                return EXIT_SUCCEEDED
            if task.provision_only:
                # A launch without `run` still detaches the setup into a job of its own: its
                # exit status is the setup's, and the stage's job has not started.
                stream.write(LOG_SETUP_JOB.format(job_id=job_id, cluster=cluster))
                if task.setup_started is not None:
                    task.setup_started()
            else:
                stream.write(LOG_JOB_STARTED.format(job_id=job_id, cluster=cluster))
                if task.job_started is not None:
                    task.job_started()
            try:
                code = int(
                    await asyncio.to_thread(
                        sky.tail_logs, cluster, job_id, follow=True, output_stream=stream
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status = await self._lost(sky, cluster, job_id)
                if status is not None:
                    cause = INFRA_CAUSES[InfraCause.LOST]
                    error = _describe(exc, secrets)
                    raise InfraError(
                        InfraCause.LOST,
                        MSG_CLUSTER_LOST_STREAM.format(
                            cluster=cluster, status=status, error=error, cause=cause
                        ),
                    ) from None
                raise
            if code in (EXIT_SUCCEEDED, EXIT_CANCELLED):
                return code
            # A job that did not succeed: the task's failure only if its cluster is still fine.
            status = await self._lost(sky, cluster, job_id)
            if status is not None:
                cause = INFRA_CAUSES[InfraCause.LOST]
                raise InfraError(
                    InfraCause.LOST,
                    MSG_CLUSTER_LOST.format(cluster=cluster, status=status, code=code, cause=cause),
                )
            if code != EXIT_FAILED:
                logger.warning("job %s on %s ended with unexpected code %s", job_id, cluster, code)
            return job_exit_code(code, stream.exit_code)
        except asyncio.CancelledError:
            stream.write(LOG_CANCELLING)
            await self._stop_remote(sky, cluster, request_id, job_id)
            raise
        except (TaskSpecError, BackendError):
            if job_id is not None:
                await self._stop_remote(sky, cluster, None, job_id)
            raise
        except Exception as exc:
            if job_id is not None:
                # The job may still run; stop it so a retry of this stage starts clean.
                await self._stop_remote(sky, cluster, None, job_id)
            action = f"launch cluster {cluster}" if task.launch else f"run on cluster {cluster}"
            raise _translate(exc, action, cluster, secrets, infra=True) from None
        finally:
            stream.stop()
            if request_id is not None and self._requests.get(cluster) == request_id:
                del self._requests[cluster]

    async def down(self, cluster_name: str) -> None:
        """Tear the cluster down (INIT clusters too); if cancelled, the teardown still finishes.

        A cluster that does not exist may be a managed stage's name: the jobs controller owns
        that job's cluster, so a managed job of that name still running is cancelled instead.
        """
        sky = await self._sky()
        in_flight = self._requests.pop(cluster_name, None)
        if in_flight is not None:
            await self._stop_remote(sky, cluster_name, in_flight, None)
        try:
            request_id = await asyncio.to_thread(sky.down, cluster_name)
            await asyncio.to_thread(
                sky.stream_and_get, request_id, output_stream=_LoggerStream(cluster_name)
            )
        except Exception as exc:
            if _is_a(exc, {"ClusterDoesNotExist"}):
                logger.info("cluster %s is already gone", cluster_name)
                await self._cancel_managed_named(sky, cluster_name)
                return
            action = f"tear down cluster {cluster_name}"
            raise _translate(exc, action, cluster_name, [], force_transient=True) from None

    def dashboard_url(self) -> str:
        if not self._endpoint:
            return ""
        return _URL_USERINFO.sub("://", self._endpoint) + DASHBOARD_PATH

    # -- managed jobs ---------------------------------------------------------------------------

    async def _run_managed(self, sky: Any, task: TaskRun, log: BinaryIO) -> int:
        """Run the stage as a managed job named after its cluster; map its final state."""
        name = task.cluster_name
        secrets = _secret_values(task.task_yaml, task.envs)
        stream = _LogStream(log)
        request_id: str | None = None
        job_id: int | None = None
        ended = False
        try:
            sky_task = await asyncio.to_thread(
                _build_task, sky, task.task_yaml, task.envs, task.checkout_dir
            )
            self._managed_names.add(name)
            request_id = await self._submit_call(
                sky, name, functools.partial(sky.jobs.launch, sky_task, name=name)
            )
            self._requests[name] = request_id
            stream.write(LOG_MANAGED_LAUNCHING.format(name=name, request_id=request_id))
            result = await asyncio.to_thread(sky.stream_and_get, request_id, output_stream=stream)
            request_id = None
            self._requests.pop(name, None)
            job_id = _first_job_id(result)
            if job_id is None:
                raise BackendError(MSG_MANAGED_NO_ID.format(name=name))
            stream.write(LOG_MANAGED_STARTED.format(job_id=job_id, name=name))
            try:
                # Its return code (0, 100, 103) says less than the state the queue gives below.
                await asyncio.to_thread(
                    sky.jobs.tail_logs, job_id=job_id, follow=True, output_stream=stream
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _describe(exc, secrets)
                stream.write(LOG_MANAGED_STREAM_BROKE.format(job_id=job_id, error=error))
                record = await asyncio.to_thread(self._managed_record, sky, job_id, name)
                status = _managed_status(record)
                if status not in _MANAGED_TERMINAL:
                    raise InfraError(
                        InfraCause.CONNECTION,
                        MSG_MANAGED_STREAM_LOST.format(
                            job_id=job_id, name=name, status=status, error=error
                        ),
                    ) from None
            record = await self._managed_settled(sky, job_id, name)
            ended = True
            return _managed_outcome(record, job_id, name, stream, secrets)
        except asyncio.CancelledError:
            stream.write(LOG_CANCELLING)
            await self._stop_managed(sky, name, request_id, job_id)
            raise
        except (TaskSpecError, BackendError):
            if not ended:
                await self._stop_managed(sky, name, request_id, job_id)
            raise
        except Exception as exc:
            await self._stop_managed(sky, name, request_id, job_id)
            action = f"run managed job {name}"
            raise _translate(exc, action, name, secrets, infra=True) from None
        finally:
            stream.stop()
            if self._requests.get(name) == request_id:
                self._requests.pop(name, None)

    def _managed_record(self, sky: Any, job_id: int, name: str) -> Any:
        """The jobs queue's record of the job (its first task), or raise BackendError."""
        result = sky.get(sky.jobs.queue_v2(refresh=False, job_ids=[job_id], fields=_MANAGED_FIELDS))
        for record in _queue_records(result):
            if _field(record, "job_id") == job_id:
                return record
        raise BackendError(MSG_MANAGED_NOT_FOUND.format(job_id=job_id, name=name))

    async def _managed_settled(self, sky: Any, job_id: int, name: str) -> Any:
        """The job's record once its state is final (the controller records it a little after
        the log ends); past the settle time the job is cancelled and this raises."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle
        while True:
            record = await asyncio.to_thread(self._managed_record, sky, job_id, name)
            status = _managed_status(record)
            if status in _MANAGED_TERMINAL:
                return record
            if loop.time() >= deadline:
                raise BackendError(
                    MSG_MANAGED_UNSETTLED.format(
                        job_id=job_id, name=name, status=status, seconds=self._settle
                    )
                )
            await asyncio.sleep(self._poll)

    def _live_managed(self, sky: Any, name: str) -> list[int]:
        """Ids of the managed jobs named exactly `name` that are not in a final state."""
        result = sky.get(
            sky.jobs.queue_v2(
                refresh=False, skip_finished=True, name_match=name, fields=_MANAGED_FIELDS
            )
        )
        ids = {
            int(_field(record, "job_id"))
            for record in _queue_records(result)
            if _field(record, "job_name") == name
            and _managed_status(record) not in _MANAGED_TERMINAL
            and _field(record, "job_id") is not None
        }
        return sorted(ids)

    async def _cancel_managed_named(self, sky: Any, name: str) -> None:
        """`down` of a managed stage: cancel its job if it still runs, and wait until it stops.

        No jobs controller means no managed job: nothing to do. Failing to look is raised
        (retried by Temporal) for a name this process launched a managed job under, so that no
        job is left running unseen; for other names (most likely an ordinary cluster already
        gone, on a server that may not run managed jobs at all) it is logged.
        """
        try:
            live = await asyncio.to_thread(self._live_managed, sky, name)
        except Exception as exc:
            if _is_a(exc, _CLUSTER_STATE_ERRORS):
                logger.info("no jobs controller is up: no managed job %s to cancel", name)
                return
            error = _describe(exc, [])
            message = MSG_MANAGED_LOOKUP_FAILED.format(name=name, error=error)
            if name in self._managed_names:
                raise BackendError(message) from None
            logger.warning("%s", message)
            return
        self._managed_names.discard(name)
        if live:
            logger.info("cancelling managed job(s) %s named %s", live, name)
            await self._cancel_managed(sky, name, live, raise_errors=True)

    async def _stop_managed(
        self, sky: Any, name: str, request_id: str | None, job_id: int | None
    ) -> None:
        """Best effort: cancel the launch request and the job (the ones the launch created, if it
        was cut short), waiting until they stopped; errors are logged, not raised."""
        if request_id is not None:
            await self._stop_remote(sky, name, request_id, None)
        try:
            if job_id is not None:
                ids = [job_id]
            elif request_id is not None:
                # The launch may have created the job before it was cancelled.
                ids = await asyncio.wait_for(
                    asyncio.to_thread(self._live_managed, sky, name), CANCEL_TIMEOUT_SECONDS
                )
            else:
                return
            if ids:
                await self._cancel_managed(sky, name, ids, raise_errors=False)
        except Exception:
            logger.warning("could not stop managed job %s", name, exc_info=True)

    async def _cancel_managed(
        self, sky: Any, name: str, job_ids: list[int], *, raise_errors: bool
    ) -> None:
        """Cancel the jobs and wait until the controller says they ended (cluster torn down)."""

        def cancel_and_wait() -> list[int]:
            sky.get(sky.jobs.cancel(job_ids=job_ids))
            deadline = time.monotonic() + self._cancel_wait
            while True:
                result = sky.get(
                    sky.jobs.queue_v2(refresh=False, job_ids=job_ids, fields=_MANAGED_FIELDS)
                )
                live = sorted(
                    {
                        int(_field(record, "job_id"))
                        for record in _queue_records(result)
                        if _managed_status(record) not in _MANAGED_TERMINAL
                    }
                )
                if not live or time.monotonic() >= deadline:
                    return live
                time.sleep(self._poll)

        try:
            live = await asyncio.to_thread(cancel_and_wait)
        except Exception as exc:
            if not raise_errors:
                logger.warning("could not cancel managed job(s) %s", job_ids, exc_info=True)
                return
            action = f"cancel managed job {name}"
            raise _translate(exc, action, name, [], force_transient=True) from None
        if live:
            ids = ", ".join(str(i) for i in live)
            message = MSG_MANAGED_NOT_STOPPED.format(
                job_ids=ids,
                name=name,
                seconds=self._cancel_wait,
                job_ids_arg=" ".join(str(i) for i in live),
            )
            if raise_errors:
                raise BackendError(message)
            logger.warning("%s", message)

    # -- extras for the CLI and metrics ---------------------------------------------------------

    def cluster_names_up(self, prefix: str = CLUSTER_PREFIX) -> list[str]:
        """Names of skyrun's clusters SkyPilot knows (any user). Blocking: call it in a thread."""
        sky = self._load_sdk()
        try:
            records = sky.get(sky.status(all_users=True))
        except Exception as exc:
            raise _translate(exc, "list clusters", "", [], force_transient=True) from None
        return sorted(str(r["name"]) for r in records if str(r["name"]).startswith(prefix))

    # -- internals ------------------------------------------------------------------------------

    async def _lost(self, sky: Any, cluster: str, job_id: int) -> str | None:
        """After a job did not succeed: how its cluster or driver was lost ("gone", "init",
        "failed_driver", ...), or None when the job ended on a healthy cluster (the task
        failed) or SkyPilot cannot tell.

        `job_status` reaches the cluster's own job table: it raises when the infrastructure no
        longer has the cluster (on Slurm, `sky status --refresh` still says UP for a cancelled
        allocation), and a job that ended by itself has a terminal status there.
        """

        def ask() -> str | None:
            try:
                statuses = sky.get(sky.job_status(cluster, [job_id]))
            except Exception as exc:
                if _is_a(exc, _CLUSTER_STATE_ERRORS):
                    status = getattr(exc, "cluster_status", None)
                    return str(getattr(status, "value", status)).lower() if status else _GONE
                if _is_a(exc, _UNREACHABLE_ERRORS):
                    # The server answered, the cluster did not (on Slurm: "job has expired").
                    return _UNREACHABLE
                raise
            state = statuses.get(job_id, statuses.get(str(job_id)))
            if state is None:
                return _JOB_GONE
            name = str(getattr(state, "value", state))
            return name.lower() if name == _DRIVER_FAILED else None

        try:
            return await asyncio.wait_for(asyncio.to_thread(ask), HEALTH_TIMEOUT_SECONDS)
        except Exception:
            logger.warning("could not tell whether cluster %s is still up", cluster, exc_info=True)
            return None

    async def _sky(self) -> Any:
        if self._sdk is not None:
            return self._sdk
        return await asyncio.to_thread(self._load_sdk)

    def _load_sdk(self) -> Any:
        with _sdk_lock:
            if self._sdk is None:
                if self._endpoint:
                    _pin_endpoint(self._endpoint)
                import sky  # lazy on purpose: slow, and only the worker needs it

                self._sdk = sky
            return self._sdk

    async def _submit(self, sky: Any, sky_task: Any, task: TaskRun) -> str:
        """Send the launch/exec request; if cancelled meanwhile, cancel the request it created."""
        call: Callable[[], str]
        if task.launch:
            # Autostop with down on every launch: a backstop if `down` is never called. Retrying
            # until up is left to Temporal, and nothing may prompt.
            call = functools.partial(
                sky.launch,
                sky_task,
                cluster_name=task.cluster_name,
                retry_until_up=False,
                idle_minutes_to_autostop=max(1, task.autostop_minutes),
                down=True,
                _need_confirmation=False,
            )
        else:
            call = functools.partial(sky.exec, sky_task, cluster_name=task.cluster_name)
        return await self._submit_call(sky, task.cluster_name, call)

    async def _submit_call(self, sky: Any, cluster: str, call: Callable[[], str]) -> str:
        """Send a request; if cancelled meanwhile, cancel the request it created."""
        submitting = asyncio.ensure_future(asyncio.to_thread(call))
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # The request may reach the server anyway (the thread cannot be stopped): wait for
            # its id so that it can be cancelled instead of provisioning a cluster unobserved.
            request_id: str | None = None
            with contextlib.suppress(Exception):
                request_id = await asyncio.wait_for(submitting, CANCEL_TIMEOUT_SECONDS)
            if request_id is not None:
                await self._stop_remote(sky, cluster, request_id, None)
            raise

    async def _stop_remote(
        self, sky: Any, cluster: str, request_id: str | None, job_id: int | None
    ) -> None:
        """Best effort: cancel the in-flight request and the job; errors are logged, not raised."""
        if request_id is None and job_id is None:
            return

        def stop() -> None:
            if request_id is not None:
                try:
                    sky.get(sky.api_cancel(request_id, silent=True))
                except Exception:
                    logger.warning(
                        "could not cancel SkyPilot request %s", request_id, exc_info=True
                    )
            if job_id is not None:
                try:
                    sky.get(sky.cancel(cluster, job_ids=[job_id]))
                except Exception:
                    logger.warning("could not cancel job %s on %s", job_id, cluster, exc_info=True)

        try:
            await asyncio.wait_for(asyncio.to_thread(stop), CANCEL_TIMEOUT_SECONDS)
        except Exception:
            logger.warning("stopping request/job on %s did not finish", cluster, exc_info=True)


# -- building the task ----------------------------------------------------------------------------


def _build_task(sky: Any, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> Any:
    """Parse the task YAML into a `sky.Task` with envs applied and local paths in the checkout.

    Raises TaskSpecError for anything wrong with the task; runs only local checks (no server).
    """
    config = _parse_config(task_yaml)
    missing = _missing_envs(config, envs)
    if missing:
        raise TaskSpecError(MSG_MISSING_ENVS.format(names=", ".join(missing)))
    config = resolve_local_paths(config, checkout_dir)
    secrets = _secret_values(task_yaml, envs)
    try:
        task = sky.Task.from_yaml_config(config, env_overrides=list(envs.items()))
        if isinstance(task.run, str) and task.run.strip():
            task.run = wrap_run(task.run)
        _resolve_substituted_paths(task, checkout_dir)
        _check_inside_checkout(task, checkout_dir)
        task.expand_and_validate_workdir()
        task.expand_and_validate_file_mounts()
    except TaskSpecError:
        raise
    except _BUILD_ERRORS as exc:
        raise TaskSpecError(MSG_TASK_INVALID.format(error=_describe(exc, secrets))) from None
    except Exception as exc:
        raise _translate(exc, "prepare the task", "", secrets) from None
    return task


def wrap_run(run: str) -> str:
    """The task's run commands in a subshell, followed by a line with their exit status."""
    return RUN_WRAPPER.format(run=run.rstrip("\n"))


def job_exit_code(code: int, reported: int | None) -> int:
    """The job's own exit status where the task printed it; SkyPilot's code otherwise.

    Only a failure is refined: a job that SkyPilot says failed (setup failed, or the task
    printed the marker itself) never becomes a success.
    """
    if reported is None or reported == EXIT_SUCCEEDED or code == EXIT_SUCCEEDED:
        return code
    return reported


# -- managed job states ---------------------------------------------------------------------------


def _first_job_id(result: Any) -> int | None:
    """The job id of a `sky.jobs.launch` result `(job_ids, controller_handle)`.

    Only the ids are touched: the handle's repr can fail on the client.
    """
    ids = result[0] if isinstance(result, tuple) and result else result
    if isinstance(ids, list):
        ids = ids[0] if ids else None
    return int(ids) if isinstance(ids, int) else None


def _queue_records(result: Any) -> list[Any]:
    """The records of a `sky.jobs.queue_v2` result `(records, total, counts, total_no_filter)`."""
    records = result[0] if isinstance(result, tuple) else result
    return list(records or [])


def _field(record: Any, name: str) -> Any:
    """A field of a queue record: a ManagedJobRecord (pydantic, dict-like) or a plain dict."""
    getter = getattr(record, "get", None)
    return getter(name) if callable(getter) else getattr(record, name, None)


def _managed_status(record: Any) -> str:
    status = _field(record, "status")
    return str(getattr(status, "value", status))


def _managed_outcome(
    record: Any, job_id: int, name: str, stream: _LogStream, secrets: list[str]
) -> int:
    """Map a managed job's final state to the stage: an exit status, or a raised error."""
    status = _managed_status(record)
    raw_reason = _field(record, "failure_reason")
    reason = _describe(RuntimeError(raw_reason), secrets) if raw_reason else MSG_NO_REASON
    count = _field(record, "recovery_count") or 0
    recoveries = LOG_MANAGED_RECOVERIES.format(count=count) if count else ""
    stream.write(LOG_MANAGED_ENDED.format(job_id=job_id, status=status, recoveries=recoveries))
    if status == _MANAGED_SUCCEEDED:
        return EXIT_SUCCEEDED
    if status == _MANAGED_CANCELLED:
        return EXIT_CANCELLED
    if status == _MANAGED_FAILED:
        return job_exit_code(EXIT_FAILED, stream.exit_code)
    if status == _MANAGED_FAILED_SETUP:
        detail = LOG_MANAGED_REASON.format(reason=reason) if raw_reason else ""
        stream.write(LOG_MANAGED_SETUP_FAILED.format(job_id=job_id, reason=detail))
        return EXIT_FAILED
    if status == _MANAGED_FAILED_PRECHECKS:
        raise TaskSpecError(MSG_MANAGED_PRECHECKS.format(name=name, reason=reason))
    if status == _MANAGED_FAILED_NO_RESOURCE:
        message = MSG_MANAGED_NO_RESOURCE.format(name=name, reason=reason)
        raise InfraError(InfraCause.CAPACITY, message)
    # FAILED_CONTROLLER: SkyPilot's own failure; Temporal retries the stage.
    raise BackendError(MSG_MANAGED_CONTROLLER.format(name=name, reason=reason))


def _parse_config(task_yaml: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(task_yaml)
    except yaml.YAMLError as exc:
        raise TaskSpecError(
            MSG_YAML_INVALID.format(error=bounded(str(exc), MAX_MESSAGE_CHARS))
        ) from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TaskSpecError(MSG_YAML_NOT_MAPPING.format(kind=type(config).__name__))
    return config


def _missing_envs(config: dict[str, Any], envs: dict[str, str]) -> list[str]:
    """Env names the task declares without a value (`KEY:` / `KEY: null`) and nobody set."""
    declared = config.get("envs")
    if not isinstance(declared, dict):
        return []
    return sorted(str(k) for k, v in declared.items() if v is None and str(k) not in envs)


def resolve_local_paths(config: dict[str, Any], checkout_dir: Path) -> dict[str, Any]:
    """A copy of the task config with relative `workdir` and local mount sources made absolute.

    SkyPilot resolves them against the process's cwd; a stage's paths mean the checkout.
    Bucket URLs, `~` and `$VAR` paths are left alone (the latter are resolved after SkyPilot
    substitutes envs).
    """
    resolved = dict(config)
    workdir = resolved.get("workdir")
    if isinstance(workdir, str):
        resolved["workdir"] = _absolute(workdir, checkout_dir)
    mounts = resolved.get("file_mounts")
    if isinstance(mounts, dict):
        new_mounts: dict[Any, Any] = {}
        for dst, src in mounts.items():
            if isinstance(src, str):
                new_mounts[dst] = _absolute(src, checkout_dir)
            elif isinstance(src, dict) and "source" in src:
                source = src["source"]
                if isinstance(source, str):
                    source = _absolute(source, checkout_dir)
                elif isinstance(source, list):
                    source = [
                        _absolute(s, checkout_dir) if isinstance(s, str) else s for s in source
                    ]
                new_mounts[dst] = {**src, "source": source}
            else:
                new_mounts[dst] = src
        resolved["file_mounts"] = new_mounts
    return resolved


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("skypilot:")


def _absolute(path: str, checkout_dir: Path) -> str:
    if not path or not _is_local(path) or path.startswith(_LOCAL_PATH_SKIP):
        return path
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.abspath(checkout_dir), path))


def _resolve_substituted_paths(task: Any, checkout_dir: Path) -> None:
    """Paths that were relative only after env substitution (`workdir: $DIR`) mean the checkout."""
    if isinstance(task.workdir, str):
        task.workdir = _absolute(task.workdir, checkout_dir)
    if task.file_mounts:
        task.file_mounts = {
            dst: _absolute(src, checkout_dir) if isinstance(src, str) else src
            for dst, src in task.file_mounts.items()
        }


def _check_inside_checkout(task: Any, checkout_dir: Path) -> None:
    """Local sources get uploaded to the cluster: keep the worker's own files off it."""
    root = checkout_dir.resolve()

    def check(field: str, path: str) -> None:
        real = Path(os.path.expanduser(path))
        real = (real if real.is_absolute() else checkout_dir / real).resolve()
        if real != root and root not in real.parents:
            raise TaskSpecError(MSG_OUTSIDE_CHECKOUT.format(field=field, path=path))

    if isinstance(task.workdir, str):
        check("workdir", task.workdir)
    for dst, src in (task.file_mounts or {}).items():
        if isinstance(src, str) and _is_local(src):
            check(f"file_mounts.{dst}", src)
    for dst, storage in (task.storage_mounts or {}).items():
        sources = getattr(storage, "source", None)
        for src in [sources] if isinstance(sources, str) else sources or []:
            if isinstance(src, str) and _is_local(src):
                check(f"file_mounts.{dst}.source", src)


# -- errors ---------------------------------------------------------------------------------------


def _is_a(exc: BaseException, names: Iterable[str]) -> bool:
    """Match by class name along the MRO: server errors are rebuilt from their names anyway."""
    wanted = set(names)
    return any(cls.__name__ in wanted for cls in type(exc).__mro__)


def _translate(
    exc: BaseException,
    action: str,
    cluster: str,
    secrets: list[str],
    *,
    force_transient: bool = False,
    infra: bool = False,
) -> TaskSpecError | BackendError:
    """Map an SDK / server exception to a user error (not retried) or a backend error (retried).

    With `infra` (running a stage), infrastructure failures become InfraError: the stage is
    relaunched by the activity, up to the pipeline's `max_infra_retries`.
    """
    error = _describe(exc, secrets)
    if _is_a(exc, _CLUSTER_STATE_ERRORS):
        message = MSG_CLUSTER_NOT_UP.format(cluster=cluster, error=error)
        return InfraError(InfraCause.LOST, message) if infra else BackendError(message)
    if infra and _is_a(exc, _CONNECTION_ERRORS):
        message = MSG_BACKEND_FAILED.format(action=action, error=error)
        return InfraError(InfraCause.CONNECTION, message)
    if not force_transient:
        if _is_a(exc, {"NoCloudAccessError"}):
            return TaskSpecError(MSG_NO_CLOUD.format(error=error))
        if _is_a(exc, {"ResourcesUnavailableError"}) and not _is_a(exc, _TRANSIENT_RESOURCE_ERRORS):
            # An empty failover history means the optimizer found nothing to even try; else
            # the clouds were tried and had no capacity, which may change.
            if not getattr(exc, "failover_history", None):
                return TaskSpecError(MSG_NO_RESOURCES.format(error=error))
            if infra:
                message = MSG_BACKEND_FAILED.format(action=action, error=error)
                return InfraError(InfraCause.CAPACITY, message)
        elif _is_a(exc, _USER_ERRORS):
            return TaskSpecError(MSG_TASK_INVALID.format(error=error))
    return BackendError(MSG_BACKEND_FAILED.format(action=action, cluster=cluster, error=error))


def _describe(exc: BaseException, secrets: list[str]) -> str:
    """The exception as one clean line for users: type, field at fault, message (bounded); no
    colours, no secrets."""
    message = _ANSI.sub("", str(exc)).strip()
    message = _URL_PASSWORD.sub(r"\1:***@", message)
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    if found := _FIELD_AT_END.search(message):
        field = found.group(1) or "(top level)"
        message = MSG_AT_FIELD.format(field=bounded(field, 200), error=message[: found.start()])
    message = bounded(message, MAX_MESSAGE_CHARS, keep_end=KEEP_END_CHARS)
    name = type(exc).__name__
    if not message:
        return name
    return message if name in ("Exception", "RuntimeError") else f"{name}: {message}"


def _secret_values(task_yaml: str, envs: dict[str, str]) -> list[str]:
    """Values to keep out of error messages: inline task secrets and secret-looking envs."""
    values = [v for k, v in envs.items() if _SECRET_ENV_NAME.search(k)]
    with contextlib.suppress(yaml.YAMLError):
        config = yaml.safe_load(task_yaml)
        if isinstance(config, dict):
            for key in ("secrets", "envs"):
                section = config.get(key)
                if isinstance(section, dict):
                    values += [
                        str(v)
                        for k, v in section.items()
                        if v is not None and (key == "secrets" or _SECRET_ENV_NAME.search(str(k)))
                    ]
    return [v for v in values if len(v) >= 4]


# -- endpoint -------------------------------------------------------------------------------------


def _pin_endpoint(endpoint: str) -> None:
    """Point this process's SDK at `endpoint`, once, before any SDK call caches the URL."""
    global _pinned_endpoint
    if _pinned_endpoint is not None:
        if _pinned_endpoint != endpoint:
            raise RuntimeError(MSG_ENDPOINT_CONFLICT.format(current=_redact_url(_pinned_endpoint)))
        return
    current = os.environ.get(ENDPOINT_ENV)
    if current and current.rstrip("/") != endpoint:
        logger.warning(
            "%s=%s is overridden by the worker settings", ENDPOINT_ENV, _redact_url(current)
        )
    os.environ[ENDPOINT_ENV] = endpoint
    _pinned_endpoint = endpoint
    common = sys.modules.get("sky.server.common")
    cache_clear = getattr(getattr(common, "get_server_url", None), "cache_clear", None)
    if callable(cache_clear):
        cache_clear()


def _redact_url(url: str) -> str:
    return _URL_PASSWORD.sub(r"\1:***@", url)


# -- log streams ----------------------------------------------------------------------------------


class _LogStream(io.TextIOBase):
    """Text stream for the SDK's `output_stream`: UTF-8 into the stage's binary log, no colours.

    `stop()` detaches it, so SDK threads still streaming after a cancellation stop writing.
    """

    def __init__(self, log: BinaryIO) -> None:
        super().__init__()
        self._log = log
        self._lock = threading.Lock()
        self._open = True
        self._partial = ""
        self.exit_code: int | None = None
        """The last exit status the task's wrapper printed (see EXIT_MARKER)."""

    def writable(self) -> bool:
        return True

    def write(self, s: str, /) -> int:
        with self._lock:
            if self._open and s:
                text = _ANSI.sub("", s)
                self._log.write(text.encode("utf-8", errors="replace"))
                self._log.flush()
                self._scan(text)
        return len(s)

    def _scan(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        # Only the unfinished end of a line is carried over (bounded: a line without end).
        self._partial = lines.pop()[-200:]
        for line in lines:
            if EXIT_MARKER in line and (found := _EXIT_LINE.search(line)):
                self.exit_code = int(found.group(1))

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        with self._lock:
            self._open = False


class _LoggerStream(io.TextIOBase):
    """Text stream that forwards a request's output (e.g. teardown progress) to the worker log."""

    def __init__(self, cluster: str) -> None:
        super().__init__()
        self._cluster = cluster

    def writable(self) -> bool:
        return True

    def write(self, s: str, /) -> int:
        for line in _ANSI.sub("", s).splitlines():
            if line.strip():
                logger.info("[%s] %s", self._cluster, line)
        return len(s)

    def flush(self) -> None:
        pass
