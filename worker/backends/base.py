"""What a compute backend does for the workflow: run a stage's task on a cluster, tear it down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from worker.contract import InfraCause

# SkyPilot's `tail_logs` return codes, which both backends use for a job's outcome.
EXIT_SUCCEEDED = 0
EXIT_FAILED = 100
EXIT_CANCELLED = 103


class TaskSpecError(Exception):
    """The task YAML (or what it asks for) cannot run on this backend; a user error, not retried."""


class BackendError(Exception):
    """The backend itself failed (cloud error, API server down); transient, retried by Temporal."""


class InfraError(BackendError):
    """The infrastructure failed the stage: the stage is relaunched (up to `max_infra_retries`),
    never counted as the task's own failure."""

    def __init__(self, cause: InfraCause, message: str) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class TaskRun:
    """One stage's task, ready to run on a cluster."""

    run_id: str
    stage: str
    cluster_name: str
    """Backend-level cluster name, unique per run (see `cluster_name_for`)."""
    task_yaml: str
    """The SkyPilot task YAML as text, as read from the checkout."""
    envs: dict[str, str]
    """Env overrides applied over the task's own `envs` (pipeline, trigger KEY=VALUE, bucket)."""
    checkout_dir: Path
    """The repository checkout at the run's commit; relative `workdir` and mounts resolve here."""
    launch: bool
    """True: this stage brings the cluster up (launch). False: the cluster is up; exec on it."""
    autostop_minutes: int = 30
    labels: dict[str, str] = field(default_factory=dict)
    lane: str = ""
    """The run's lane (RunRequest.lane); the local backend gives each lane a bucket directory."""
    provision_only: bool = False
    """Just-in-time provisioning (issue 12): launch the cluster and run the task's setup, but
    not its job; the stage later execs its job on the ready cluster (`launch` False)."""
    job_started: Callable[[], None] | None = None
    """Called when the job itself starts (after any provisioning and setup), for the timeline."""
    setup_started: Callable[[], None] | None = None
    """Called when the task's setup starts, where the backend knows (the timeline's setup)."""
    managed: bool = False
    """Run as a SkyPilot managed job (pipeline `managed: true`); the local backend runs it as an
    ordinary stage and says so in the log."""


class ComputeBackend(Protocol):
    """Implemented by the local and the SkyPilot backend; every method is safe to retry."""

    name: str

    async def validate(self, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> None:
        """Raise TaskSpecError naming the problem if the task cannot run here."""

    async def run(self, task: TaskRun, log: BinaryIO) -> int:
        """Launch or exec the task, appending its output to `log`; return the job's exit status.

        With `provision_only` the cluster is launched and the setup run, but not the job; the
        status is the setup's (0: the cluster is ready for an exec).

        A failing job is a return value (EXIT_FAILED or the process's code), not an exception.
        On asyncio cancellation the backend stops the job (kills it / cancels the request) and
        re-raises; the cluster is left for `down`.
        """
        ...

    async def down(self, cluster_name: str) -> None:
        """Tear the cluster down; a cluster that is already gone is not an error."""

    def dashboard_url(self) -> str:
        """Base URL of the backend's dashboard, or "" when it has none."""
        ...


def cluster_name_for(run_id: str, cluster: str) -> str:
    """Cluster names valid for SkyPilot (lowercase, letters/digits/dashes, start with a letter)."""
    import re

    raw = f"sr-{run_id}-{cluster}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    return name[:60].rstrip("-")
