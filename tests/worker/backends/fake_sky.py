"""A recording double of the `sky` SDK: the real `sky.Task` parses, the network calls are scripted.

Every call is checked against the real SDK function's signature, so the backend cannot drift
from SkyPilot 0.14.1's call shapes while the tests stay green.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import sky
from sky import exceptions
from sky.jobs import ManagedJobStatus
from sky.schemas.api.responses import ManagedJobRecord
from sky.skylet.job_lib import JobStatus

# Longest a scripted call blocks waiting for a cancel; keeps a broken test from hanging.
BLOCK_SECONDS = 5.0


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class UnprintableHandle:
    """Like some real controller handles, whose repr fails on the client."""

    def __repr__(self) -> str:
        raise AttributeError("handle has no attribute 'stable_internal_external_ips'")


class FakeJobs:
    """Scripted `sky.jobs` (managed jobs): a jobs controller that runs each job to a final state.

    `final` is the state a job reaches when its log ends; `states`, if set, are what the queue
    says of the job on successive calls before that (e.g. RUNNING while the controller winds
    down). A cancelled job becomes CANCELLED.
    """

    def __init__(self, parent: FakeSky) -> None:
        self._parent = parent
        self.final: ManagedJobStatus = ManagedJobStatus.SUCCEEDED
        self.states: list[ManagedJobStatus] = []
        self.failure_reason: str | None = None
        self.recovery_count = 0
        self.job_output = "(train, pid=1) training\n::metric accuracy=0.9\n"
        self.tail_code: int | None = 0
        self.tail_error: Exception | None = None
        self.launch_ids: list[int] | None = None
        """What the launch request returns as job ids; None: a new job per launch."""
        self.queue_error: Exception | None = None
        self.cancel_error: Exception | None = None
        self.stuck = False
        """The job never ends, not even when cancelled (a controller that stopped answering)."""
        self.block: str | None = None
        """"launch": the launch request, "job": tail_logs, block until cancelled."""
        self.jobs: dict[int, dict[str, Any]] = {}
        """job id -> {"job_name", "status"}: every managed job the controller knows."""
        self._ids = itertools.count(7)

    def live(self) -> list[int]:
        """Ids of the jobs not in a terminal state."""
        return [i for i, job in self.jobs.items() if not job["status"].is_terminal()]

    def launch(self, task: Any, *args: Any, **kwargs: Any) -> str:
        self._parent._record("jobs.launch", task, *args, **kwargs)
        if self._parent.submit_error is not None:
            raise self._parent.submit_error
        return self._parent._new_request("jobs.launch", name=kwargs.get("name"))

    def tail_logs(self, *args: Any, **kwargs: Any) -> int | None:
        self._parent._record("jobs.tail_logs", *args, **kwargs)
        out = kwargs.get("output_stream")
        if out is not None:
            print(self.job_output, end="", file=out, flush=True)
        if self.tail_error is not None:
            raise self.tail_error
        job = self.jobs[kwargs["job_id"]]
        if self.block == "job":
            self._parent._wait_for_cancel()
            return 103
        if job["status"] == ManagedJobStatus.RUNNING:
            job["status"] = self.final
        return self.tail_code

    def queue_v2(self, *args: Any, **kwargs: Any) -> str:
        self._parent._record("jobs.queue_v2", *args, **kwargs)
        return self._parent._new_request("jobs.queue_v2", **kwargs)

    def cancel(self, *args: Any, **kwargs: Any) -> str:
        self._parent._record("jobs.cancel", *args, **kwargs)
        self._parent._released.set()
        return self._parent._new_request("jobs.cancel", **kwargs)

    # -- results of the requests ----------------------------------------------------------------

    def result(self, kind: str, info: dict[str, Any]) -> Any:
        if kind == "jobs.launch":
            if self.block == "launch":
                self._parent._wait_for_cancel()
                raise exceptions.RequestCancelled("request is cancelled")
            if self._parent.request_error is not None:
                raise self._parent.request_error
            if self.launch_ids is not None:
                return self.launch_ids, UnprintableHandle()
            job_id = next(self._ids)
            self.jobs[job_id] = {"job_name": info["name"], "status": ManagedJobStatus.RUNNING}
            return [job_id], UnprintableHandle()
        if kind == "jobs.queue_v2":
            if self.queue_error is not None:
                raise self.queue_error
            records = []
            for job_id, job in self.jobs.items():
                if info.get("job_ids") is not None and job_id not in info["job_ids"]:
                    continue
                if info.get("skip_finished") and job["status"].is_terminal():
                    continue
                if info.get("name_match") and info["name_match"] not in job["job_name"]:
                    continue
                status = self.states.pop(0) if self.states else job["status"]
                records.append(
                    ManagedJobRecord(
                        job_id=job_id,
                        task_id=0,
                        job_name=job["job_name"],
                        status=status,
                        failure_reason=self.failure_reason,
                        recovery_count=self.recovery_count,
                    )
                )
            return records, len(records), {}, len(self.jobs)
        if kind == "jobs.cancel":
            if self.cancel_error is not None:
                raise self.cancel_error
            for job_id in info.get("job_ids") or []:
                job = self.jobs[job_id]
                if not job["status"].is_terminal() and not self.stuck:
                    job["status"] = ManagedJobStatus.CANCELLED
            return None
        raise AssertionError(f"unexpected request {kind}")


class FakeSky:
    """Scripted `sky`: set the attributes below before a call to shape what the server does."""

    Task = sky.Task
    StatusRefreshMode = sky.StatusRefreshMode
    exceptions = exceptions

    def __init__(self) -> None:
        self.jobs = FakeJobs(self)
        self.calls: list[Call] = []
        self.clusters: set[str] = set()
        self.job_id: int | None = 1
        self.exit_code = 0
        self.request_output = "\x1b[1mLaunching\x1b[0m provisioning logs\n"
        self.job_output = "(task, pid=1) hello\n::metric accuracy=0.9\n"
        self.job_output_after = ""
        """Written in a second piece after `job_output` (a line split across writes)."""
        self.submit_delay = 0.0
        self.submit_error: Exception | None = None
        self.request_error: Exception | None = None
        self.tail_error: Exception | None = None
        self.down_error: Exception | None = None
        self.api_cancel_error: Exception | None = None
        self.job_state: Any = JobStatus.FAILED
        """What `job_status` says of the job (a sky JobStatus, or None: no such job)."""
        self.lose_cluster = False
        """The cluster vanishes (preempted) while its job is followed."""
        self.block: str | None = None
        """"request": stream_and_get of launch/exec, "job": tail_logs, block until cancelled."""
        self.blocked = threading.Event()
        self._released = threading.Event()
        self._requests: dict[str, tuple[str, dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- inspection -----------------------------------------------------------------------------

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    # -- the SDK surface the backend uses -------------------------------------------------------

    def launch(self, task: Any, *args: Any, **kwargs: Any) -> str:
        self._record("launch", task, *args, **kwargs)
        if self.submit_delay:
            time.sleep(self.submit_delay)
        if self.submit_error is not None:
            raise self.submit_error
        cluster = kwargs["cluster_name"]
        self.clusters.add(cluster)
        return self._new_request("launch", cluster=cluster)

    def exec(self, task: Any, *args: Any, **kwargs: Any) -> str:
        self._record("exec", task, *args, **kwargs)
        if self.submit_error is not None:
            raise self.submit_error
        return self._new_request("exec", cluster=kwargs["cluster_name"])

    def stream_and_get(self, request_id: str, *args: Any, **kwargs: Any) -> Any:
        self._record("stream_and_get", request_id, *args, **kwargs)
        kind, info = self._requests[request_id]
        out = kwargs.get("output_stream")
        if kind.startswith("jobs."):
            if out is not None and kind == "jobs.launch":
                print(self.request_output, end="", file=out, flush=True)
            return self.jobs.result(kind, info)
        if kind in ("launch", "exec"):
            if out is not None:
                print(self.request_output, end="", file=out, flush=True)
            if self.block == "request":
                self._wait_for_cancel()
                raise exceptions.RequestCancelled(f"request {request_id} is cancelled")
            if self.request_error is not None:
                raise self.request_error
            if kind == "exec" and info["cluster"] not in self.clusters:
                raise exceptions.ClusterDoesNotExist(
                    f"\x1b[33mCluster {info['cluster']!r} does not exist.\x1b[0m"
                )
            return self.job_id, object()
        return self._result(kind, info)

    def get(self, request_id: str) -> Any:
        self._record("get", request_id)
        kind, info = self._requests[request_id]
        return self._result(kind, info)

    def tail_logs(self, cluster_name: str, job_id: int | None, follow: bool, **kwargs: Any) -> int:
        self._record("tail_logs", cluster_name, job_id, follow, **kwargs)
        out = kwargs.get("output_stream")
        if out is not None:
            print(self.job_output, end="", file=out, flush=True)
            if self.job_output_after:
                print(self.job_output_after, end="", file=out, flush=True)
        if self.lose_cluster:
            self.clusters.discard(cluster_name)
        if self.tail_error is not None:
            raise self.tail_error
        if self.block == "job":
            self._wait_for_cancel()
            return 103
        return self.exit_code

    def api_cancel(self, request_ids: Any = None, **kwargs: Any) -> str:
        self._record("api_cancel", request_ids, **kwargs)
        self._released.set()
        if self.api_cancel_error is not None:
            raise self.api_cancel_error
        return self._new_request("api_cancel", request_ids=request_ids)

    def cancel(self, cluster_name: str, **kwargs: Any) -> str:
        self._record("cancel", cluster_name, **kwargs)
        self._released.set()
        return self._new_request("cancel", cluster=cluster_name)

    def down(self, cluster_name: str, **kwargs: Any) -> str:
        self._record("down", cluster_name, **kwargs)
        return self._new_request("down", cluster=cluster_name)

    def job_status(self, *args: Any, **kwargs: Any) -> str:
        self._record("job_status", *args, **kwargs)
        return self._new_request("job_status", cluster=args[0], job_ids=args[1])

    def status(self, *args: Any, **kwargs: Any) -> str:
        self._record("status", *args, **kwargs)
        return self._new_request("status")

    # -- internals ------------------------------------------------------------------------------

    def _record(self, call: str, /, *args: Any, **kwargs: Any) -> None:
        # Raises TypeError if the real SDK function would not accept these arguments.
        real: Any = functools.reduce(getattr, call.split("."), sky)
        inspect.signature(real).bind(*args, **kwargs)
        with self._lock:
            self.calls.append(Call(call, args, kwargs))

    def _new_request(self, kind: str, **info: Any) -> str:
        with self._lock:
            request_id = f"req-{next(self._ids)}-{kind}"
            self._requests[request_id] = (kind, info)
        return request_id

    def _result(self, kind: str, info: dict[str, Any]) -> Any:
        if kind.startswith("jobs."):
            return self.jobs.result(kind, info)
        if kind == "down":
            if self.down_error is not None:
                raise self.down_error
            if info["cluster"] not in self.clusters:
                raise exceptions.ClusterDoesNotExist(f"Cluster {info['cluster']!r} does not exist.")
            self.clusters.discard(info["cluster"])
            return None
        if kind == "job_status":
            if info["cluster"] not in self.clusters:
                raise exceptions.ClusterDoesNotExist(
                    f"Cluster {info['cluster']!r} not found on the cloud provider."
                )
            return {job_id: self.job_state for job_id in info["job_ids"]}
        if kind == "status":
            return [{"name": name, "status": sky.ClusterStatus.UP} for name in self.clusters]
        if kind == "api_cancel":
            ids = info["request_ids"]
            return [ids] if isinstance(ids, str) else list(ids or [])
        return None

    def _wait_for_cancel(self) -> None:
        self.blocked.set()
        self._released.wait(BLOCK_SECONDS)
