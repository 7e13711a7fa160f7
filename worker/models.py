"""Inputs and outputs of the worker's activities: one dataclass in and one out for each."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.contract import GateResult, RunProgress, RunRequest, StageEstimate, Verdict

DEFAULT_MAX_INFRA_RETRIES = 2
"""The pipeline file's `max_infra_retries` when it does not say."""


@dataclass
class PlannedStage:
    name: str
    cluster: str
    cluster_name: str
    task_file: str
    task_yaml: str
    envs: dict[str, str]
    launch: bool
    down_after: list[str] = field(default_factory=list)
    """Backend cluster names no later stage needs: downed as soon as this stage ends."""
    needs: list[str] | None = None
    """Stages (by name) that must succeed before this one starts; None, from a planner that
    predates `needs:`, means the stage before it."""
    managed: bool = False
    """Run as a SkyPilot managed job (pipeline `managed: true`; issue 13)."""
    prelaunch: bool = True
    """Its cluster may be provisioned while its needs still run (pipeline `prelaunch`; issue 12)."""
    fingerprint: str = ""
    """What its cluster is launched with (backend, resources): a warm cluster is reused only
    by a stage with the same ("" when it does not launch, or cannot be told)."""


@dataclass
class MetricPatternModel:
    name: str
    pattern: str


@dataclass
class PrepareInput:
    run_id: str
    request: RunRequest


@dataclass
class PrepareOutput:
    commit: str
    worker_queue: str
    stages: list[PlannedStage]
    metric_patterns: list[MetricPatternModel]
    autostop_minutes: int
    timeout_minutes: int
    notify_slack: str = ""
    skip_reason: str = ""
    """Non-empty when the run has nothing to do (a push to a branch the pipeline does not watch)."""
    backend: str = ""
    dashboard_url: str = ""
    worker_gone_s: int = 0
    """For a run pinned to `worker_queue`: how long its work may wait for that worker."""
    gates: list[str] = field(default_factory=list)
    """The pipeline's quality gates as written (checked by `prepare_run`)."""
    max_infra_retries: int = DEFAULT_MAX_INFRA_RETRIES
    keep_warm_minutes: int = 0
    """Pipeline `keep_warm_minutes`: > 0, the run's clusters stay up for the lane's next run."""
    # Concurrency caps (worker/capacity.py), read at the run's commit and from the settings.
    concurrency: int = 0
    """The pipeline's `concurrency`: runs of this repository computing at once (0: no limit)."""
    max_concurrent_runs: int = 0
    """SKYRUN_MAX_CONCURRENT_RUNS of the worker that prepared the run (0: no limit)."""
    # Cost (issue 14): the run's estimate, made before anything is launched (worker/cost.py).
    estimate: list[StageEstimate] = field(default_factory=list)
    estimate_usd: float | None = None
    # Budgets (issue 14): why the run must wait for approval ("" when it need not).
    approval_reason: str = ""
    approval_limit_usd: float = 0.0
    approval_timeout_s: int = 0
    run_limit_usd: float = 0.0
    """The tighter of budget.max_run_usd and SKYRUN_APPROVAL_USD (0: none)."""


@dataclass
class StageInput:
    run_id: str
    request: RunRequest
    commit: str
    stage: PlannedStage
    metric_patterns: list[MetricPatternModel]
    autostop_minutes: int
    max_infra_retries: int = DEFAULT_MAX_INFRA_RETRIES
    """Relaunches allowed when the infrastructure fails the stage (pipeline `max_infra_retries`)."""
    warm_from: str = ""
    """The earlier run whose warm cluster this stage launches on (no provisioning)."""
    provision: bool = False
    """Provision the stage's cluster (launch with setup, no job): `provision_stage` sets it."""
    provisioned: bool = False
    """The cluster was provisioned ahead of time for this stage: its job execs on it."""


@dataclass
class StageOutput:
    exit_code: int
    metrics: dict[str, float]
    report: str
    log_tail: list[str]
    duration_s: float
    infra_recoveries: list[str] = field(default_factory=list)
    """InfraCause values the stage was relaunched after, in order."""
    launch_s: float | None = None
    """Seconds from the activity's start until the job itself started (launch, setup and
    workdir sync); None when no job started."""
    setup_s: float | None = None
    """Seconds from the activity's start until the task's setup started; None when the backend
    did not say (no setup, or SkyPilot running it inside its launch request)."""


@dataclass
class DownInput:
    run_id: str
    cluster_names: list[str]


@dataclass
class LaneInput:
    run_ids: list[str]


@dataclass
class CleanupInput:
    run_id: str


@dataclass
class AuthorizeInput:
    run_id: str
    request: RunRequest


@dataclass
class AuthorizeOutput:
    allowed: bool
    reason: str = ""
    """Why not, in words for the person who asked (posted where the run was asked for)."""
    commit: str = ""
    """The exact commit to run, when the gate resolves it (a PR's head as of the comment)."""


@dataclass
class ReportInput:
    reporter: str
    """Which reporter this call is for: "github" or "slack"."""
    run_id: str
    request: RunRequest
    progress: RunProgress
    handles: dict[str, str] = field(default_factory=dict)
    """What earlier reports created (comment id, check run id, Slack ts), to edit in place."""
    notify_slack: str = ""
    """The pipeline's `notify.slack` channel, for runs not started from Slack."""


@dataclass
class ReportOutput:
    handles: dict[str, str] = field(default_factory=dict)


@dataclass
class GatesInput:
    progress: RunProgress
    """The run as its stages left it (metrics, branch, start time for the baseline)."""
    gates: list[str]


@dataclass
class GatesOutput:
    verdict: Verdict
    gates: list[GateResult] = field(default_factory=list)
    baseline_run_id: str = ""
    """The run the `base` gates compared with ("" when none was needed or found)."""
