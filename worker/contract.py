"""The plain contract between the front doors (bot, CLI) and the durable worker.

Dataclasses and names only: this module is imported by the bot, so it must stay free of
heavy imports (no temporalio, no sky).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import Enum

WORKFLOW_NAME = "SkyrunPipeline"
QUERY_PROGRESS = "progress"
DEFAULT_TASK_QUEUE = "skyrun"

# Search attributes every run carries, so runs can be listed and filtered without a database.
SA_REPO = "SkyrunRepo"
SA_LANE = "SkyrunLane"
SA_REF = "SkyrunRef"
SA_COMMIT = "SkyrunCommit"
SA_TRIGGER = "SkyrunTrigger"
SA_USER = "SkyrunUser"
SA_PR = "SkyrunPr"
SA_STATE = "SkyrunState"
SA_DELIVERY = "SkyrunDelivery"
KEYWORD_ATTRIBUTES = (
    SA_REPO,
    SA_LANE,
    SA_REF,
    SA_COMMIT,
    SA_TRIGGER,
    SA_USER,
    SA_STATE,
    SA_DELIVERY,
)
INT_ATTRIBUTES = (SA_PR,)


class Trigger(str, Enum):
    PUSH = "push"
    COMMENT = "comment"
    PULL_REQUEST = "pull_request"
    SLACK = "slack"
    CLI = "cli"
    MERGE_GROUP = "merge_group"
    """A GitHub merge queue group: runs on the group's head, compared with its base branch."""


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    DENIED = "denied"
    # Budgets (issue 14): planned, estimated above a limit, nothing launched until approved.
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def finished(self) -> bool:
        return self not in (RunState.QUEUED, RunState.RUNNING, RunState.AWAITING_APPROVAL)


class StageState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class Verdict(str, Enum):
    """What a run's quality gates decided, apart from how its execution ended (`RunState`)."""

    PASSED = "passed"
    FAILED = "failed"
    NONE = "none"
    """No gates, or the run ended before they were checked."""


@dataclass
class GateResult:
    """One gate of the pipeline file (worker/gates.py), as decided at the end of a run."""

    expr: str
    passed: bool
    value: float | None = None
    """The run's value of the gate's metric (None: not reported)."""
    threshold: float | None = None
    """The number compared with: the gate's own, or the baseline's value ± N (None: no baseline)."""
    note: str = ""
    """Why the gate passed or failed other than by comparison ("no baseline", "not reported")."""


@dataclass
class SweepMember:
    """A run's place in a sweep (`/skyrun sweep`): which sweep, which combination."""

    id: str
    """The sweep's workflow id."""
    index: int
    """The combination's position in the sweep (0-based, in the order of the table)."""
    values: dict[str, str] = field(default_factory=dict)
    """The combination's values (KEY → value), also set as the run's envs."""


@dataclass
class GitHubTarget:
    """Where a GitHub-triggered run reports: the PR (if any) and the commit's check run."""

    installation_id: int | None = None
    pr_number: int | None = None
    comment_id: int | None = None
    base_branch: str | None = None
    head_repo: str | None = None


@dataclass
class SlackTarget:
    """Where a Slack-triggered (or Slack-notified) run reports."""

    channel: str = ""
    user: str = ""
    response_url: str = ""


@dataclass
class RunRequest:
    """Everything that identifies and parameterises one pipeline run."""

    repo: str
    """`owner/name` for GitHub repositories, otherwise the URL or absolute local path."""
    clone_url: str
    ref: str = ""
    """Branch (or other ref) the run is for; empty means the repository's default."""
    commit: str = ""
    """Exact commit to run; empty means whatever `ref` points at when the checkout happens."""
    stages: list[str] = field(default_factory=list)
    envs: dict[str, str] = field(default_factory=dict)
    trigger: Trigger = Trigger.CLI
    requested_by: str = ""
    lane: str = ""
    delivery_id: str = ""
    github: GitHubTarget | None = None
    slack: SlackTarget | None = None
    supersedes: list[str] = field(default_factory=list)
    """Only read by runs started before the lane coordinator (worker/lanes.py) existed."""
    requested_at: int = 0
    """Nanoseconds since the epoch when a front door received the request: the newest of a lane
    wins, whatever order its runs reach the lane's coordinator in. Not part of the run's id."""
    default_branch: str = ""
    check_push_filter: bool = False
    """Push-triggered: end quietly as skipped unless the pipeline's `on.push` globs match `ref`."""
    check_pr_filter: bool = False
    """Pull-request-triggered: end quietly as skipped unless the pipeline sets `on.pull_request`."""
    # Retry from the failed stage (worker/retry.py): `stages` then names every stage of the run
    # retried, in pipeline order; only those not in `reused` are planned and executed.
    retry_of: str = ""
    """The run this one retries ("" for a run that is no retry)."""
    reused: list[StageProgress] = field(default_factory=list)
    """Stages of `retry_of` carried over as they ended there (each with `reused_from` set)."""
    retry_reasons: dict[str, str] = field(default_factory=dict)
    """Why each stage that is not reused runs again (stage name → reason)."""
    data_key: str = ""
    """What tasks get as SKYRUN_DATA_KEY: the run id of the first run of a chain of retries
    ("" = this run's own id), so every retry finds where the runs it reuses kept their data."""
    # Sweeps (`/skyrun sweep`): set on each run a sweep starts; such a run posts no report of
    # its own (the sweep posts one table for all of them).
    sweep: SweepMember | None = None


class InfraCause(str, Enum):
    """Why the infrastructure, not the task, failed a stage. The values travel in activity
    outputs and label metrics: never change one."""

    LOST = "lost"
    """The cluster was preempted or lost while (or before) its job ran."""
    CAPACITY = "capacity"
    """No capacity or quota for the resources anywhere SkyPilot's failover tried."""
    CONNECTION = "connection"
    """The connection to the cluster or to the SkyPilot API server was lost."""


INFRA_CAUSES = {
    InfraCause.LOST: "the cluster was preempted or lost",
    InfraCause.CAPACITY: "no capacity or quota for the resources",
    InfraCause.CONNECTION: "the connection to the cluster or the SkyPilot API server was lost",
}
"""The cause in words, for logs and errors."""
INFRA_RECOVERED = {
    InfraCause.LOST: "recovered after preemption",
    InfraCause.CAPACITY: "recovered after no capacity",
    InfraCause.CONNECTION: "recovered after a lost connection",
}
"""What a stage shows once it came through the cause ("recovered after preemption, 1x")."""


# Cost (issue 14): what a run was estimated to cost before it launched, and what it cost.


@dataclass
class StageEstimate:
    """One stage's part of a run's estimate: the hourly price of its cluster x its duration."""

    stage: str
    cluster: str
    resources: str = ""
    """What the price is for, e.g. `1x A100 (lambda gpu_1x_a100)` or `2 CPUs`."""
    hourly_usd: float | None = None
    """None: the price is unknown (`note` says why)."""
    minutes: float = 0.0
    from_run: str = ""
    """The lane's last successful run the duration comes from ("": the worst case)."""
    usd: float | None = None
    note: str = ""


@dataclass
class ClusterCost:
    """One cluster a run held: its hourly price x the time it was up (launch start to down)."""

    cluster: str
    name: str
    hourly_usd: float | None = None
    up_at: str = ""
    """When its launch started (provisioning counts)."""
    down_at: str = ""
    """When its teardown finished ("" while it is up)."""
    up_s: float = 0.0
    """Its time up so far (to `down_at`, or to the last look while it is up)."""
    busy_s: float = 0.0
    """Time its stages ran (the rest of its up time was provisioning, setup waits or idle)."""
    cost_usd: float | None = None
    # Just-in-time provisioning and warm clusters (issue 12).
    provision_s: float = 0.0
    """How long provisioning it ahead of its stage took (launch and setup, no job)."""
    reused_from: str = ""
    """The earlier run whose warm cluster this is ("": this run launched it)."""


SIGNAL_APPROVE = "approve"
"""Lets a run that waits in `awaiting_approval` go (payload: `Approve`)."""


@dataclass
class Approve:
    user: str
    via: str = ""
    """Where it was approved: `github`, `slack` or `cli`."""


@dataclass
class Approval:
    """Why a run waits for approval, the numbers, and who let it go."""

    reason: str
    estimate_usd: float | None = None
    limit_usd: float = 0.0
    expires_at: str = ""
    approved_by: str = ""
    approved_at: str = ""


@dataclass
class StageProgress:
    name: str
    cluster: str
    state: StageState = StageState.PENDING
    started_at: str = ""
    finished_at: str = ""
    duration_s: float | None = None
    exit_code: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    report: str = ""
    log_tail: list[str] = field(default_factory=list)
    error: str = ""
    launched: bool = False
    """True when this stage launched its cluster, False when it exec'd on an existing one."""
    # Retry from the failed stage.
    reused_from: str = ""
    """The run this stage's result was carried over from, without running ("": it ran here)."""
    rerun_reason: str = ""
    """In a retry: why this stage runs again (it failed, or shares a cluster with one that did)."""
    infra_retries: int = 0
    """Relaunches after the infrastructure failed the stage (see `infra_recovered`)."""
    infra_recovered: list[InfraCause] = field(default_factory=list)
    """What each relaunch recovered from, in order."""
    # Stages as a DAG (issue 12).
    needs: list[str] | None = None
    """Stages that had to succeed before this one started ([]: it started with the run); None
    in runs that predate `needs:`, where each stage needed the one before it."""
    # Cost (issue 14).
    cost_usd: float | None = None
    """Its cluster's hourly price x its time; the launching stage also carries the cluster's
    provisioning, idle and teardown time. None while unknown."""
    # Just-in-time provisioning and warm clusters (issue 12).
    provision_started_at: str = ""
    """When its cluster's provisioning ahead of time began ("": it was not prelaunched)."""
    provision_finished_at: str = ""
    provision_failed: str = ""
    """Why provisioning ahead of time did not give a ready cluster (the stage launched it)."""
    job_started_at: str = ""
    """When its job began on the cluster (after provisioning, or the launch in its own step)."""
    cluster_reused_from: str = ""
    """The earlier run whose warm cluster the stage ran on ("": none)."""
    launch_s: float | None = None
    """Of its own step, the seconds before its job began (launching and setting up its cluster,
    syncing the workdir); None when unknown."""
    setup_s: float | None = None
    """Of its own step, the seconds before its setup began; None when unknown (no setup, or
    SkyPilot's launch request does not say)."""
    provision_setup_s: float | None = None
    """Of its provisioning ahead of time, the seconds before its setup began (as `setup_s`)."""


@dataclass
class RunProgress:
    """Live and final view of a run, returned by the progress query and as the workflow result."""

    run_id: str
    repo: str
    ref: str
    commit: str
    trigger: Trigger
    requested_by: str
    state: RunState = RunState.QUEUED
    stages: list[StageProgress] = field(default_factory=list)
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    backend: str = ""
    clusters_up: list[str] = field(default_factory=list)
    dashboard_url: str = ""
    pr_number: int | None = None
    base_ref: str = ""
    """The branch a PR run compares its metrics with (the PR's base)."""
    verdict: Verdict = Verdict.NONE
    """What the gates decided (set once, after the stages succeeded)."""
    gates: list[GateResult] = field(default_factory=list)
    # Retry from the failed stage.
    retry_of: str = ""
    """The run this one retries from its failed stage ("" for a run that is no retry)."""
    # Sweeps: the sweep this run is part of (None for a run of its own).
    sweep: SweepMember | None = None
    # Concurrency caps (worker/capacity.py): where a `queued` run waits for a free slot.
    queue_position: int | None = None
    """1 = next to compute; None unless the run waits in a capacity queue."""
    queue_ahead: str = ""
    """The run just ahead in line (`acme/models#41`, or a run id); "" when next."""
    queue_pool: str = ""
    """What it waits for: "repository" (`concurrency`) or "deployment" (the deployment's cap)."""
    queue_capacity: int = 0
    """That pool's cap (at most this many runs compute at once)."""
    # Cost (issue 14): the estimate made before any launch, and the actual cost.
    estimate_usd: float | None = None
    """None when unknown (a price or the plan is unknown)."""
    budget_usd: float = 0.0
    """The run's limit (the lower of budget.max_run_usd and SKYRUN_APPROVAL_USD; 0: none): a run
    that costs more is reported as over budget, not stopped."""
    estimate: list[StageEstimate] = field(default_factory=list)
    cost_usd: float | None = None
    """Every cluster's hourly price x its time up (so far, while running); None when unknown."""
    clusters: list[ClusterCost] = field(default_factory=list)
    approval: Approval | None = None
    """Set when the run's estimate passed a budget: it waited (or waits) for approval."""

    @property
    def failed_gates(self) -> list[GateResult]:
        return [gate for gate in self.gates if not gate.passed]

    @property
    def metrics(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for stage in self.stages:
            merged.update(stage.metrics)
        return merged

    @property
    def failed_stage(self) -> StageProgress | None:
        return next((s for s in self.stages if s.state is StageState.FAILED), None)

    # Stages as a DAG (issue 12).
    @property
    def stage_needs(self) -> dict[str, list[str]]:
        """Each stage's needs, an unknown (None) read as the stage before it."""
        return {
            stage.name: (
                list(stage.needs)
                if stage.needs is not None
                else ([self.stages[i - 1].name] if i else [])
            )
            for i, stage in enumerate(self.stages)
        }


@dataclass
class RunResult:
    """What the pipeline workflow returns."""

    progress: RunProgress


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str, limit: int = 40) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


DEFAULT_BRANCH = "default"
"""The branch of a request that names none, until the run learns the repository's default."""


def lane_for_branch(repo: str, branch: str) -> str:
    return f"{repo}#branch:{branch}"


def lane_for_pr(repo: str, pr_number: int) -> str:
    return f"{repo}#pr:{pr_number}"


def lane_for_merge_group(repo: str, head_ref: str) -> str:
    """Each merge group its own lane: it never supersedes a branch's or a pull request's runs."""
    return f"{repo}#merge_group:{head_ref}"


def run_id_for(request: RunRequest) -> str:
    """Derive the workflow id from what identifies the work, so a repeat maps to the same run."""
    identity = {
        "repo": request.repo,
        "lane": request.lane,
        "ref": request.ref,
        "commit": request.commit,
        "stages": request.stages,
        "envs": sorted(request.envs.items()),
        "trigger": request.trigger.value,
    }
    if not request.commit:
        # Without a commit the work is only identified by the delivery (or the caller's nonce).
        identity["delivery"] = request.delivery_id
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    name = request.repo.rstrip("/").rsplit("/", 1)[-1]
    return f"{slug(name, 24)}-{digest}"
