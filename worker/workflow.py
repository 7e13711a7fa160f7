"""The pipeline workflow: checkout → stages on clusters → every cluster down, whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from worker.activities import USER_ERROR, PipelineActivities
    from worker.backends.base import EXIT_CANCELLED
    from worker.budget import EXPIRED
    from worker.capacity import (
        DEPLOYMENT_POOL,
        POOL_DEPLOYMENT,
        POOL_REPOSITORY,
        repository_pool,
        run_label,
    )
    from worker.contract import (
        DEFAULT_BRANCH,
        QUERY_PROGRESS,
        SA_COMMIT,
        SA_LANE,
        SA_REF,
        SA_STATE,
        SIGNAL_APPROVE,
        WORKFLOW_NAME,
        Approval,
        Approve,
        ClusterCost,
        InfraCause,
        RunProgress,
        RunRequest,
        RunResult,
        RunState,
        StageProgress,
        StageState,
        Trigger,
        lane_for_branch,
    )
    from worker.coordinator import (
        COORDINATION_RETRY,
        SIGNAL_ADMITTED,
        SIGNAL_LEASE,
        SIGNAL_LEAVE,
        SIGNAL_NOTICE,
        SIGNAL_POSITION,
        SIGNAL_WARM,
        CoordinatorActivities,
        CoordinatorState,
        EnterInput,
        Handover,
        Lease,
        Left,
        Notice,
        Position,
        StageTiming,
        Ticket,
        WarmCluster,
        lane_workflow_id,
        pool_workflow_id,
    )
    from worker.costview import account
    from worker.gates import undecided, verdict_of
    from worker.ledger import LEDGER_RETRY, CostRecord, LedgerActivities, RecordInput, month_of
    from worker.limits import bounded
    from worker.models import (
        AuthorizeInput,
        CleanupInput,
        DownInput,
        GatesInput,
        LaneInput,
        PlannedStage,
        PrepareInput,
        PrepareOutput,
        ReportInput,
        StageInput,
        StageOutput,
    )
    from worker.reporting import ReportingActivities
    from worker.retry import planned_request, stage_list

STATE_KEY = SearchAttributeKey.for_keyword(SA_STATE)
COMMIT_KEY = SearchAttributeKey.for_keyword(SA_COMMIT)
REF_KEY = SearchAttributeKey.for_keyword(SA_REF)
LANE_KEY = SearchAttributeKey.for_keyword(SA_LANE)

STAGE_FAILED = "stage '{stage}' failed with exit status {code}"
STAGE_CANCELLED = "stage '{stage}' was cancelled"
RUN_TIMED_OUT = "the run exceeded timeout_minutes ({minutes} min) during stage '{stage}'"
RUN_CANCELLED = "the run was cancelled"
RUN_CANCELLED_BECAUSE = "the run was cancelled: {reason}"
# Runs started before the lane coordinator existed replay the old wait_for_lane path.
PATCH_LANES = "lane-coordinator"
# Runs started before a request without a branch learned its lane's branch replay without it.
PATCH_DEFAULT_LANE = "default-branch-lane"
# Runs started before quality gates existed replay without the evaluate_gates step.
PATCH_GATES = "gates"
# Runs started before stages formed a DAG replay the sequential loop (_run_stages).
PATCH_DAG = "dag"
RUN_TIMED_OUT_STAGES = "the run exceeded timeout_minutes ({minutes} min) during stages {stages}"
PROVISION_SETUP_FAILED = (
    "provisioning ahead of time failed (setup exited with status {code}); launched at stage time"
)
STAGES_STUCK = (
    "stages {stages} could not start: a stage they need neither ran nor succeeded; "
    "check their needs in .skyrun.yaml and run again"
)
STAGE_CANCELLED_BY = "stage '{stage}' was cancelled because stage '{failed}' failed"
# Runs started before concurrency caps existed replay without entering capacity pools.
PATCH_CAPACITY = "capacity"
# Runs cancelled while entering a coordinator hung before this (their cancel was consumed).
PATCH_ENTER_CANCELLED = "enter-cancelled"
# Runs started before monthly budgets existed replay without recording their cost.
PATCH_LEDGER = "ledger"
# Runs started before just-in-time provisioning replay without provisioning ahead (issue 12).
PATCH_PRELAUNCH = "prelaunch"
# Runs started before warm clusters replay without leasing or handing them over (issue 12).
PATCH_WARM = "warm-clusters"
WARM_AUTOSTOP_MARGIN_MINUTES = 10
"""A warm cluster's idle autostop (the backstop) comes this long after its warm time ends."""
# Runs started before budgets existed replay without the approval wait (issue 14).
PATCH_APPROVAL = "approval"
WORKER_GONE = (
    "the worker holding this run's clusters ({queue}) did not come back within {seconds} s, "
    "and its jobs stopped with it; restart it (same host and SKYRUN_DATA_DIR) and retry the run"
)
CLUSTERS_LEFT = (
    "clusters {names} stay on that worker's disk (nothing runs on them) until it starts again "
    "and removes them"
)

PREPARE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=[USER_ERROR],
)
STAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=3,
    non_retryable_error_types=[USER_ERROR],
)
# Tearing down never gives up: a leaked GPU cluster costs more than a stuck workflow.
DOWN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
# Reporting retries transient API errors, then gives up: it never fails the run.
REPORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=["NoReporter"],
)
GATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)
GATES_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=["NoClient"],
)
GATED_TRIGGERS = (Trigger.COMMENT, Trigger.PULL_REQUEST)
HEARTBEAT_TIMEOUT = timedelta(seconds=20)
PINNED_SCHEDULE_TIMEOUT = timedelta(minutes=10)


class ApprovalExpired(Exception):
    """A run waiting for budget approval was not approved in time (caught in `run`)."""


def pinned_wait(prepared: PrepareOutput) -> timedelta | None:
    """How long a pinned run's work waits for its worker (older workers send no value)."""
    if not prepared.worker_queue:
        return None
    if prepared.worker_gone_s:
        return timedelta(seconds=prepared.worker_gone_s)
    return PINNED_SCHEDULE_TIMEOUT


def not_started(err: ActivityError) -> bool:
    """The activity timed out waiting for a worker to pick it up."""
    cause = err.cause
    return isinstance(cause, ActivityTimeoutError) and cause.type is TimeoutType.SCHEDULE_TO_START


def _planned_needs(stages: list[PlannedStage]) -> dict[str, list[str]]:
    """Each planned stage's needs; a planner that predates `needs:` (None) meant the one before."""
    needs: dict[str, list[str]] = {}
    for index, stage in enumerate(stages):
        if stage.needs is None:
            needs[stage.name] = [stages[index - 1].name] if index else []
        else:
            needs[stage.name] = list(stage.needs)
    return needs


PROVISION_MARGIN = 1.25
PROVISION_SLACK_S = 5.0


def provision_delay(last: StageTiming | None) -> float:
    """How long after the start of the stages to provision a stage's cluster, so it is ready
    when its needs are met: as long before that as its launch took last time, with a margin
    (0 without a last time)."""
    if last is None:
        return 0.0
    return max(0.0, last.ready_after_s - last.provision_s * PROVISION_MARGIN - PROVISION_SLACK_S)


def _woken(
    done: set[str], count: int, failed: list[str], unfinished: list[asyncio.Task[None]]
) -> bool:
    """Whether the scheduler has something to do: a stage succeeded, failed or ended."""
    return len(done) != count or bool(failed) or any(t.done() for t in unfinished)


async def _all_done(tasks: Mapping[str, asyncio.Task[Any]]) -> None:
    """Wait until every stage task ended; their errors (cancelled jobs) are expected here."""
    await workflow.wait_condition(lambda: all(t.done() for t in tasks.values()))
    for task in tasks.values():
        if not task.cancelled():
            task.exception()


def _first_error_stage(tasks: dict[str, asyncio.Task[None]]) -> str:
    """The stage whose activity failed for good (its task ended with an exception)."""
    return next(
        name for name, task in tasks.items() if task.done() and task.exception() is not None
    )


def error_message(err: BaseException) -> str:
    """The innermost message of an activity failure, which is what the user needs to read."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    if isinstance(err, ActivityTimeoutError) and err.cause is not None:
        return error_message(err.cause)
    return getattr(err, "message", None) or str(err)


@workflow.defn(name=WORKFLOW_NAME)
class PipelineWorkflow:
    def __init__(self) -> None:
        self._progress: RunProgress | None = None
        self._up: list[str] = []
        self._active = ""
        """The running stage (the running stages, comma-separated, in a DAG run)."""
        self._stopping = False
        self._outcome: RunState | None = None
        self._version = 0
        self._closing = False
        self._handles: dict[str, dict[str, str]] = {}
        self._reporters: dict[str, asyncio.Task[None]] = {}
        self._notify_slack = ""
        self._gone_after: timedelta | None = None
        """How long work for the worker this run is pinned to may wait for it (None: no pin)."""
        self._left: list[str] = []
        self._entered: list[str] = []
        """Coordinators this run entered (workflow ids), left again after its teardown."""
        self._admitted: set[str] = set()
        self._notice = ""
        self._pools: dict[str, tuple[str, int]] = {}
        """Capacity pools this run waits for or holds: coordinator id → (kind, capacity)."""
        self._approved: Approve | None = None
        self._prelaunches: dict[str, asyncio.Task[bool]] = {}
        # Warm clusters (issue 12).
        self._lane = ""
        """The lane coordinator's workflow id ("" for a run without a lane)."""
        self._lane_name = ""
        self._lease: list[WarmCluster] = []
        """Warm clusters the lane gave this run that it has not taken (yet)."""
        self._taken: list[WarmCluster] = []
        """Warm clusters this run launches on instead of fresh ones."""
        self._prepared: PrepareOutput | None = None
        self._history: dict[str, StageTiming] = {}
        """The lane's last successful run's stage timings (from its lease)."""
        self._stages_began: float | None = None
        self._ready_at: dict[str, float] = {}
        """When each stage's needs were met (workflow time)."""
        self._provisioning: set[str] = set()
        """Stages whose cluster's provisioning ahead has begun (not still waiting its turn)."""
        """Stage name → its cluster's provisioning ahead of time (True: ready for its job)."""

    @workflow.signal(name=SIGNAL_ADMITTED)
    def admitted(self, coordinator: str) -> None:
        self._admitted.add(coordinator)

    @workflow.signal(name=SIGNAL_LEASE)
    def lease(self, lease: Lease) -> None:
        """The lane's warm clusters, now this run's (sent just before its admission)."""
        self._lease += lease.clusters
        self._history = {timing.stage: timing for timing in lease.history}

    @workflow.signal(name=SIGNAL_APPROVE)
    def approve(self, approve: Approve) -> None:
        """Budget approval: the first one counts; one sent while nothing waits is kept."""
        if self._approved is None:
            self._approved = approve

    @workflow.signal(name=SIGNAL_NOTICE)
    def notice(self, notice: Notice) -> None:
        self._notice = notice.reason

    @workflow.signal(name=SIGNAL_POSITION)
    def position(self, place: Position) -> None:
        """A capacity pool's news of this run's place in its line (coordination, no query)."""
        if place.coordinator not in self._pools or place.coordinator in self._admitted:
            return  # a late word from a pool this run has already got through
        assert self._progress is not None
        progress = self._progress
        progress.queue_position, progress.queue_ahead = place.position, place.ahead
        progress.queue_pool = self._pools[place.coordinator][0]
        progress.queue_capacity = place.capacity
        if progress.state is not RunState.QUEUED:
            self._set_state(RunState.QUEUED)
        self._changed()

    @workflow.query(name=QUERY_PROGRESS)
    def progress(self) -> RunProgress:
        assert self._progress is not None
        self._progress.clusters_up = list(self._up)
        account(self._progress, workflow.now().isoformat())
        return self._progress

    @workflow.run
    async def run(self, request: RunRequest) -> RunResult:
        info = workflow.info()
        progress = RunProgress(
            run_id=info.workflow_id,
            repo=request.repo,
            ref=request.ref,
            commit=request.commit,
            trigger=request.trigger,
            requested_by=request.requested_by,
            started_at=workflow.now().isoformat(),
            pr_number=request.github.pr_number if request.github else None,
            base_ref=(request.github.base_branch or "") if request.github else "",
            sweep=request.sweep,
        )
        progress.retry_of = request.retry_of
        self._progress = progress
        queue = info.task_queue
        prepared: PrepareOutput | None = None
        if request.trigger is not Trigger.PUSH:
            # Push runs stay silent until the pipeline says the branch is watched.
            self._start_reporters(request)
        self._changed()
        try:
            if request.github is not None and request.trigger in GATED_TRIGGERS:
                gate = await workflow.execute_activity_method(
                    ReportingActivities.authorize_run,
                    AuthorizeInput(info.workflow_id, request),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=GATE_RETRY,
                )
                if not gate.allowed:
                    progress.error = gate.reason
                    self._outcome = RunState.DENIED
                    return await self._close(info.workflow_id, queue)
                if gate.commit:
                    request.commit = progress.commit = gate.commit
            if (
                not request.ref
                and request.lane == lane_for_branch(request.repo, DEFAULT_BRANCH)
                and workflow.patched(PATCH_DEFAULT_LANE)
            ):
                await self._learn_default_branch(request, info.workflow_id)
            if request.lane and workflow.patched(PATCH_LANES):
                self._lane = lane_workflow_id(request.lane, info.task_queue)
                self._lane_name = request.lane
                await self._enter(
                    self._lane,
                    CoordinatorState(request.lane),
                    request,
                )
            elif request.supersedes:
                await workflow.execute_activity_method(
                    PipelineActivities.wait_for_lane,
                    LaneInput(request.supersedes),
                    start_to_close_timeout=timedelta(hours=1),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                )
            prepared = await workflow.execute_activity_method(
                PipelineActivities.prepare_run,
                PrepareInput(info.workflow_id, planned_request(request)),
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=PREPARE_RETRY,
            )
            progress.commit = prepared.commit
            if prepared.commit != request.commit:
                workflow.upsert_search_attributes([COMMIT_KEY.value_set(prepared.commit)])
            progress.backend = prepared.backend
            progress.dashboard_url = prepared.dashboard_url
            queue = prepared.worker_queue or queue
            self._gone_after = pinned_wait(prepared)
            if prepared.skip_reason:
                progress.error = prepared.skip_reason
                self._outcome = RunState.SKIPPED
                return await self._close(info.workflow_id, queue)
            progress.stages = stage_list(
                request, [StageProgress(s.name, s.cluster) for s in prepared.stages]
            )
            self._estimated(prepared)
            self._prepared = prepared
            if self._lease and workflow.patched(PATCH_WARM):
                await self._take_warm(prepared, queue)
            self._notify_slack = prepared.notify_slack
            self._start_reporters(request)
            if prepared.approval_reason and workflow.patched(PATCH_APPROVAL):
                await self._await_approval(prepared)
            if (prepared.concurrency or prepared.max_concurrent_runs) and workflow.patched(
                PATCH_CAPACITY
            ):
                await self._enter_pools(request, prepared)
            self._set_state(RunState.RUNNING)
            await self._run_stages_within(request, prepared, queue)
            if self._outcome is None and prepared.gates and workflow.patched(PATCH_GATES):
                await self._check_gates(prepared.gates)
        except ApprovalExpired:
            pass  # the run ends cancelled, saying why (set by _await_approval)
        except TimeoutError:
            minutes = prepared.timeout_minutes if prepared else 0
            # The stages whose jobs the timeout stopped (several in a DAG run).
            running = [s.name for s in progress.stages if s.state is StageState.RUNNING]
            running = running or [self._active]
            progress.error = RUN_TIMED_OUT.format(minutes=minutes, stage=running[0])
            if len(running) > 1:
                names = ", ".join(f"'{name}'" for name in running)
                progress.error = RUN_TIMED_OUT_STAGES.format(minutes=minutes, stages=names)
            for stage in progress.stages:
                if stage.name in running:
                    stage.state, stage.error = StageState.FAILED, progress.error
            self._finish_stages(StageState.FAILED, progress.error)  # the rest never started
            self._outcome = RunState.TIMED_OUT
        except (asyncio.CancelledError, CancelledError):
            self._mark_cancelled()
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                self._mark_cancelled()
            else:
                progress.error = bounded(error_message(err))
                if self._gone_after is not None and not_started(err):
                    progress.error = WORKER_GONE.format(
                        queue=queue, seconds=int(self._gone_after.total_seconds())
                    )
                self._finish_stages(StageState.FAILED, progress.error)
                self._outcome = RunState.FAILED
        return await self._close(info.workflow_id, queue)

    async def _close(self, run_id: str, queue: str) -> RunResult:
        """Tear everything down, then publish the outcome: "finished" means no cluster is left."""
        assert self._progress is not None
        if self._lane and self._prepared is not None and workflow.patched(PATCH_WARM):
            await self._keep_warm(queue)
        await self._teardown(run_id, queue)
        await self._leave()
        if self._left:
            note = CLUSTERS_LEFT.format(names=", ".join(self._left))
            self._progress.error = f"{self._progress.error}; {note}".lstrip("; ")
        self._progress.finished_at = workflow.now().isoformat()
        account(self._progress, self._progress.finished_at)
        if self._progress.cost_usd is not None and workflow.patched(PATCH_LEDGER):
            await self._record_cost(self._progress.cost_usd)
        outcome = self._outcome or RunState.SUCCEEDED
        self._set_state(outcome)
        self._closing = True
        await asyncio.gather(*self._reporters.values())
        if outcome is RunState.CANCELLED:
            raise CancelledError(self._progress.error)
        if outcome in (RunState.FAILED, RunState.TIMED_OUT):
            raise ApplicationError(
                self._progress.error, self._progress, type="RunFailed", non_retryable=True
            )
        return RunResult(self._progress)

    async def _record_cost(self, usd: float) -> None:
        """Add this run's cost to its repository's ledger of the month (monthly budgets)."""
        assert self._progress is not None
        info = workflow.info()
        try:
            await workflow.execute_activity_method(
                LedgerActivities.record_cost,
                RecordInput(
                    self._progress.repo,
                    month_of(self._progress.finished_at),
                    info.task_queue,
                    CostRecord(f"{info.workflow_id}/{info.run_id}", usd),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=LEDGER_RETRY,
            )
        except ActivityError as err:
            # The run is over either way; a lost record only lets a later run spend more.
            workflow.logger.warning("recording the cost failed: %s", error_message(err))

    async def _check_gates(self, gates: list[str]) -> None:
        """Record what the gates decide; the run's state stays as its stages ended."""
        assert self._progress is not None
        try:
            out = await workflow.execute_activity_method(
                PipelineActivities.evaluate_gates,
                GatesInput(self._progress, gates),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=GATES_RETRY,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            # A required check must not pass on a comparison that never happened.
            self._progress.gates = undecided(gates, bounded(error_message(err)))
        else:
            self._progress.gates = out.gates
        self._progress.verdict = verdict_of(self._progress.gates)
        self._changed()

    async def _learn_default_branch(self, request: RunRequest, run_id: str) -> None:
        """A request that names no branch shares the lane of the repository's default branch
        (a push to it and `/skyrun OWNER/REPO` in Slack must never compute at once)."""
        branch = await workflow.execute_activity_method(
            PipelineActivities.resolve_default_branch,
            PrepareInput(run_id, request),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=PREPARE_RETRY,
        )
        if branch:
            assert self._progress is not None
            request.ref = self._progress.ref = branch
            request.lane = lane_for_branch(request.repo, branch)
            workflow.upsert_search_attributes(
                [REF_KEY.value_set(branch), LANE_KEY.value_set(request.lane)]
            )

    async def _enter(
        self,
        coordinator: str,
        state: CoordinatorState,
        request: RunRequest,
        *,
        label: str = "",
        capacity: int = 0,
    ) -> None:
        """Wait until `coordinator` admits this run (a lane may cancel it instead)."""
        info = workflow.info()
        self._entered.append(coordinator)
        await workflow.execute_activity_method(
            CoordinatorActivities.enter,
            EnterInput(
                coordinator,
                state,
                Ticket(info.workflow_id, info.run_id, request.requested_at, label, capacity),
                info.task_queue,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=COORDINATION_RETRY,
            # Its signal must land before this run's leave, or the coordinator would admit a
            # closed run.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        if workflow.cancellation_reason() is not None and workflow.patched(PATCH_ENTER_CANCELLED):
            # A cancel that landed while the signal was being sent is consumed by the activity,
            # which then completes: without this the run would wait for an admission that its
            # coordinator, told of the cancel too, never sends.
            raise asyncio.CancelledError
        await workflow.wait_condition(lambda: coordinator in self._admitted)

    async def _enter_pools(self, request: RunRequest, prepared: PrepareOutput) -> None:
        """Take a slot of each capacity pool that applies, repository first, then deployment
        (always this order: worker/capacity.py says why it cannot deadlock); while a pool is
        full the run is `queued` and shows its place in line. Left with the lane, after
        teardown."""
        assert self._progress is not None
        info = workflow.info()
        pools = []
        if prepared.concurrency:
            key = repository_pool(request.repo)
            pools.append((key, POOL_REPOSITORY, prepared.concurrency))
        if prepared.max_concurrent_runs:
            pools.append((DEPLOYMENT_POOL, POOL_DEPLOYMENT, prepared.max_concurrent_runs))
        label = run_label(request.repo, self._progress.pr_number, info.workflow_id)
        try:
            for key, kind, capacity in pools:
                coordinator = pool_workflow_id(key, info.task_queue)
                self._pools[coordinator] = (kind, capacity)
                state = CoordinatorState(key, capacity=capacity, newest_wins=False)
                await self._enter(coordinator, state, request, label=label, capacity=capacity)
        finally:
            progress = self._progress
            progress.queue_position, progress.queue_ahead = None, ""
            progress.queue_pool, progress.queue_capacity = "", 0
            self._changed()

    async def _leave(self) -> None:
        """After teardown: whoever waits behind this run may go."""
        info = workflow.info()
        for coordinator in reversed(self._entered):
            # A coordinator that is gone has nobody waiting behind this run.
            with contextlib.suppress(FailureError):
                taken = [c.name for c in self._taken] if coordinator == self._lane else []
                await workflow.get_external_workflow_handle(coordinator).signal(
                    SIGNAL_LEAVE, Left(info.workflow_id, info.run_id, taken)
                )
        self._entered = []

    async def _run_stages_within(
        self, request: RunRequest, prepared: PrepareOutput, queue: str
    ) -> None:
        """Run the stages; past `timeout_minutes`, cancel them and raise TimeoutError."""
        if workflow.patched(PATCH_DAG):
            stages = asyncio.create_task(self._run_dag(request, prepared, queue))
        else:
            stages = asyncio.create_task(self._run_stages(request, prepared, queue))
        try:
            await workflow.wait_condition(
                stages.done, timeout=timedelta(minutes=prepared.timeout_minutes)
            )
        except (TimeoutError, asyncio.CancelledError):
            # The flag covers a cancel that lands as a stage completes: the SDK may then deliver
            # the stage's result instead of the cancellation, and the loop must still stop.
            self._stopping = True
            stages.cancel()
            # Wait for the running stage's cancellation (its job killed) before teardown.
            with contextlib.suppress(asyncio.CancelledError, ActivityError):
                await stages
            raise
        await stages

    async def _run_stages(self, request: RunRequest, prepared: PrepareOutput, queue: str) -> None:
        assert self._progress is not None
        for planned, stage in zip(prepared.stages, self._executed_stages(), strict=True):
            if self._stopping:
                raise asyncio.CancelledError
            self._active = stage.name
            if not await self._execute_stage(request, prepared, planned, stage, queue):
                self._progress.error = stage.error
                self._finish_stages(StageState.SKIPPED, "")
                self._outcome = RunState.FAILED
                return
            self._changed()
            await self._down(planned, queue)

    def _executed_stages(self) -> list[StageProgress]:
        """The stages this run executes: all but those a retry reused (worker/retry.py)."""
        assert self._progress is not None
        return [stage for stage in self._progress.stages if not stage.reused_from]

    # --- Stages as a DAG (issue 12) -------------------------------------------------------

    async def _run_dag(self, request: RunRequest, prepared: PrepareOutput, queue: str) -> None:
        """Start every stage whose needs have succeeded, each at once on its own cluster.

        Stages sharing a cluster are ordered by their needs (the pipeline file is refused
        otherwise), so they run one after another. A failed stage skips the stages not yet
        started and cancels the running ones (their jobs killed); a cancelled run (or one past
        its timeout) cancels them all and leaves their clusters to the teardown.
        """
        assert self._progress is not None
        progress = {stage.name: stage for stage in self._progress.stages}
        needs = _planned_needs(prepared.stages)
        for planned in prepared.stages:
            shown = progress.get(planned.name)
            if shown is not None:
                shown.needs = needs[planned.name]
        self._changed()
        # A stage that already succeeded (reused by a retry) is a met need and does not run.
        done = {name for name, stage in progress.items() if stage.state is StageState.SUCCEEDED}
        waiting = [p for p in prepared.stages if p.name not in done]
        tasks: dict[str, asyncio.Task[None]] = {}
        busy: set[str] = set()
        """Clusters a running stage's job uses now."""
        failed: list[str] = []
        self._stages_began = workflow.time()
        if workflow.patched(PATCH_PRELAUNCH):
            self._start_prelaunches(request, prepared, waiting, done, needs, queue)
        try:
            while True:
                if self._stopping:
                    raise asyncio.CancelledError
                for planned in list(waiting) if not failed else []:
                    if planned.cluster in busy:
                        continue
                    if all(n in done or n not in needs for n in needs[planned.name]):
                        waiting.remove(planned)
                        busy.add(planned.cluster)
                        tasks[planned.name] = asyncio.create_task(
                            self._dag_stage(request, prepared, planned, queue, done, busy, failed)
                        )
                self._set_running()
                unfinished = [t for t in tasks.values() if not t.done()]
                errors = [t for t in tasks.values() if t.done() and t.exception() is not None]
                if errors:
                    # An activity that failed for good (not a job's exit status): the run fails
                    # with its error, the others are cancelled first.
                    error = errors[0].exception()
                    assert error is not None
                    await self._cancel_dag(tasks, failed_by=_first_error_stage(tasks))
                    raise error
                if failed:
                    await self._cancel_dag(tasks, failed_by=failed[0])
                    self._progress.error = progress[failed[0]].error
                    self._finish_stages(StageState.SKIPPED, "")
                    self._outcome = RunState.FAILED
                    return
                if not unfinished and not any(
                    all(n in done or n not in needs for n in needs[p.name]) for p in waiting
                ):
                    await self._stop_prelaunches()
                    if waiting:  # needs that can never be met: refuse to call it a success
                        self._progress.error = STAGES_STUCK.format(
                            stages=", ".join(f"'{p.name}'" for p in waiting)
                        )
                        self._finish_stages(StageState.SKIPPED, "")
                        self._outcome = RunState.FAILED
                    return
                count = len(done)
                await workflow.wait_condition(
                    functools.partial(_woken, done, count, failed, unfinished)
                )
        except (asyncio.CancelledError, Exception):
            # Not BaseException: a workflow evicted from the cache closes its coroutines.
            # Cancelled or timed out: cancel the running jobs and wait for them to be killed.
            # Their stages stay running here; the run's handler closes them as it ended.
            self._stopping = True
            self._cancel_jobs(tasks)
            await _all_done(tasks)
            await self._stop_prelaunches()
            raise

    def _cancel_jobs(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        """Cancel the stages whose job still runs; one downing its clusters finishes that."""
        assert self._progress is not None
        running = {s.name for s in self._progress.stages if s.state is StageState.RUNNING}
        for name, task in tasks.items():
            if name in running:
                task.cancel()

    def _set_running(self) -> None:
        assert self._progress is not None
        running = [s.name for s in self._progress.stages if s.state is StageState.RUNNING]
        if running:
            self._active = ", ".join(running)

    async def _cancel_dag(self, tasks: dict[str, asyncio.Task[None]], failed_by: str) -> None:
        """After `failed_by` failed: cancel the jobs still running, and wait until they stop."""
        assert self._progress is not None
        self._cancel_jobs(tasks)
        await _all_done(tasks)
        await self._stop_prelaunches()
        now = workflow.now().isoformat()
        for stage in self._progress.stages:
            if stage.state is StageState.RUNNING and stage.name != failed_by:
                stage.state = StageState.CANCELLED
                stage.error = STAGE_CANCELLED_BY.format(stage=stage.name, failed=failed_by)
                stage.finished_at = now
        self._changed()

    async def _dag_stage(
        self,
        request: RunRequest,
        prepared: PrepareOutput,
        planned: PlannedStage,
        queue: str,
        done: set[str],
        busy: set[str],
        failed: list[str],
    ) -> None:
        """One stage of a DAG run: its job, then (succeeded) its clusters no later stage uses."""
        assert self._progress is not None
        stage = next(s for s in self._progress.stages if s.name == planned.name)
        succeeded = await self._execute_stage(request, prepared, planned, stage, queue)
        busy.discard(planned.cluster)
        if not succeeded:
            failed.append(stage.name)
            self._changed()
            return
        done.add(stage.name)
        self._changed()
        if prepared.keep_warm_minutes and workflow.patched(PATCH_WARM):
            return  # its clusters stay up to the end of the run, then stay warm for the lane
        if not self._stopping and not failed:
            await self._down(planned, queue)

    def _stage_input(
        self, request: RunRequest, prepared: PrepareOutput, planned: PlannedStage
    ) -> StageInput:
        assert self._progress is not None
        autostop = prepared.autostop_minutes
        if prepared.keep_warm_minutes:  # the backstop must not end the warm time early
            autostop = max(autostop, prepared.keep_warm_minutes + WARM_AUTOSTOP_MARGIN_MINUTES)
        stage = next(s for s in self._progress.stages if s.name == planned.name)
        return StageInput(
            run_id=self._progress.run_id,
            request=request,
            commit=prepared.commit,
            stage=planned,
            metric_patterns=prepared.metric_patterns,
            autostop_minutes=autostop,
            max_infra_retries=prepared.max_infra_retries,
            warm_from=stage.cluster_reused_from if planned.launch else "",
        )

    async def _stage_activity(
        self,
        method: Callable[[PipelineActivities, StageInput], Awaitable[StageOutput]],
        data: StageInput,
        prepared: PrepareOutput,
        queue: str,
    ) -> StageOutput:
        """A stage's job (or its cluster's provisioning) on the run's worker; a cancel waits
        until the job is stopped."""
        return await workflow.execute_activity_method(
            method,
            data,
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=prepared.timeout_minutes + 5),
            schedule_to_start_timeout=self._gone_after,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=STAGE_RETRY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

    async def _execute_stage(
        self,
        request: RunRequest,
        prepared: PrepareOutput,
        planned: PlannedStage,
        stage: StageProgress,
        queue: str,
    ) -> bool:
        """Run one stage's job on its cluster and record how it ended; True if it succeeded."""
        assert self._progress is not None
        stage.state = StageState.RUNNING
        stage.started_at = workflow.now().isoformat()
        stage.launched = planned.launch
        self._ready_at[planned.name] = workflow.time()
        self._changed()
        data = self._stage_input(request, prepared, planned)
        provisioning = self._prelaunches.pop(planned.name, None)
        if provisioning is not None and planned.name not in self._provisioning:
            # Its needs were met before its provisioning was due: launch it now instead.
            provisioning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await provisioning
        elif provisioning is not None and await provisioning:
            # Its cluster is up and set up: the job execs on it (a failed provisioning is
            # simply launched again now, below).
            data.stage, data.provisioned = replace(planned, launch=False), True
        if planned.launch and planned.cluster_name not in self._up:
            # Recorded before launching: a cancelled launch still leaves a cluster to down.
            self._up.append(planned.cluster_name)
            self._cluster_launching(planned)
        if workflow.patched(PATCH_PRELAUNCH):
            stage.job_started_at = workflow.now().isoformat()
            self._changed()
        out = await self._stage_activity(PipelineActivities.run_stage, data, prepared, queue)
        stage.exit_code = out.exit_code
        stage.metrics = out.metrics
        stage.report = out.report
        stage.log_tail = out.log_tail
        stage.duration_s = out.duration_s
        stage.launch_s = out.launch_s
        stage.setup_s = out.setup_s
        self._recovered(stage, out.infra_recoveries)
        stage.finished_at = workflow.now().isoformat()
        self._cluster_ran(planned, out.duration_s)
        if out.exit_code != 0:
            stage.state = (
                StageState.CANCELLED if out.exit_code == EXIT_CANCELLED else StageState.FAILED
            )
            stage.error = STAGE_FAILED.format(stage=stage.name, code=out.exit_code)
            return False
        stage.state = StageState.SUCCEEDED
        return True

    # --- Just-in-time provisioning (issue 12) ------------------------------------------------

    def _start_prelaunches(
        self,
        request: RunRequest,
        prepared: PrepareOutput,
        waiting: list[PlannedStage],
        done: set[str],
        needs: dict[str, list[str]],
        queue: str,
    ) -> None:
        """Provision the fresh cluster of every stage that has to wait for others (and allows it:
        `prelaunch`), so it is ready when its needs are met: timed from the lane's last
        successful run (its launch taken from when its needs were met, with a margin), or at
        the start of the run without one."""
        for planned in waiting:
            unmet = [n for n in needs[planned.name] if n not in done and n in needs]
            warm = planned.cluster_name in self._up  # a warm cluster taken from the lane
            # A managed job's cluster belongs to SkyPilot's jobs controller: never ahead.
            ahead = planned.prelaunch and not planned.managed
            if planned.launch and ahead and unmet and not warm:
                delay = provision_delay(self._history.get(planned.name))
                self._prelaunches[planned.name] = asyncio.create_task(
                    self._prelaunch(request, prepared, planned, queue, delay)
                )

    async def _prelaunch(
        self,
        request: RunRequest,
        prepared: PrepareOutput,
        planned: PlannedStage,
        queue: str,
        delay: float = 0.0,
    ) -> bool:
        """Launch the stage's cluster with its setup and no job (after `delay` seconds, a
        durable timer); True when it is ready."""
        assert self._progress is not None
        stage = next(s for s in self._progress.stages if s.name == planned.name)
        if delay > 0:
            await workflow.sleep(delay)
        if self._stopping or planned.cluster_name in self._up:
            return False
        self._provisioning.add(planned.name)
        self._up.append(planned.cluster_name)  # before launching: a cancelled one is downed too
        self._cluster_launching(planned)
        stage.provision_started_at = workflow.now().isoformat()
        self._changed()
        started = workflow.time()
        try:
            out = await self._stage_activity(
                PipelineActivities.provision_stage,
                self._stage_input(request, prepared, planned),
                prepared,
                queue,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            stage.provision_failed = bounded(error_message(err), 300)
            return False
        finally:
            stage.provision_finished_at = workflow.now().isoformat()
            self._changed()
        for cluster in self._progress.clusters:
            if cluster.name == planned.cluster_name:
                cluster.provision_s = round(workflow.time() - started, 3)
        self._recovered(stage, out.infra_recoveries)  # relaunched while provisioning ahead
        stage.provision_setup_s = out.setup_s
        if out.exit_code != 0:
            stage.provision_failed = PROVISION_SETUP_FAILED.format(code=out.exit_code)
            return False
        return True

    @staticmethod
    def _recovered(stage: StageProgress, causes: list[str]) -> None:
        """Add the infrastructure failures a launch recovered from to the stage's (those of its
        provisioning ahead first)."""
        stage.infra_recovered = [*stage.infra_recovered, *(InfraCause(c) for c in causes)]
        stage.infra_retries = len(stage.infra_recovered)

    async def _stop_prelaunches(self) -> None:
        """Cancel provisioning no stage took (a failed or cancelled run); its clusters are in
        `_up`, so the teardown downs them."""
        pending = self._prelaunches
        for task in pending.values():
            task.cancel()
        await _all_done(pending)
        self._prelaunches = {}

    # --- Warm clusters (issue 12) ----------------------------------------------------------

    async def _take_warm(self, prepared: PrepareOutput, queue: str) -> None:
        """Launch on the lane's warm clusters where one matches (same cluster, resources and
        worker): no provisioning. The others go back to the lane as they were."""
        assert self._progress is not None
        for planned in prepared.stages:
            match = next(
                (
                    warm
                    for warm in self._lease
                    if planned.launch
                    and planned.fingerprint
                    and (warm.cluster, warm.fingerprint, warm.queue)
                    == (planned.cluster, planned.fingerprint, queue)
                ),
                None,
            )
            if match is None:
                continue
            self._lease.remove(match)
            self._taken.append(match)
            fresh = planned.cluster_name
            for other in prepared.stages:
                if other.cluster_name == fresh:
                    other.cluster_name = match.name
                other.down_after = [match.name if n == fresh else n for n in other.down_after]
            for stage in self._progress.stages:
                if stage.cluster == planned.cluster:
                    stage.cluster_reused_from = match.run_id
            self._up.append(match.name)
            self._cluster_launching(planned, match.since)
            self._progress.clusters[-1].reused_from = match.run_id
        unused, self._lease = self._lease, []
        await self._hand_over(unused)
        self._changed()

    async def _keep_warm(self, queue: str) -> None:
        """At the end of the run: a run that succeeded leaves its clusters to its lane for
        `keep_warm_minutes`; any run gives back warm clusters it never took."""
        assert self._progress is not None
        giving, self._lease = self._lease, []
        prepared = self._prepared
        # A warm cluster no stage of this run got to use goes back (any outcome), warm again
        # from now: this run's cost covered it while it held it.
        used = {s.cluster for s in self._progress.stages if s.started_at and not s.reused_from}
        now = workflow.now().isoformat()
        giving += [
            replace(c, since=now)
            for c in self._taken
            if c.cluster not in used and c.name in self._up
        ]
        if prepared is not None and prepared.keep_warm_minutes and self._outcome is None:
            until = (workflow.now() + timedelta(minutes=prepared.keep_warm_minutes)).isoformat()
            launched = {p.cluster_name: p for p in prepared.stages if p.launch and p.fingerprint}
            hourly = {c.name: c.hourly_usd for c in self._progress.clusters}
            for name in self._up:
                if (planned := launched.get(name)) is not None and planned.cluster in used:
                    giving.append(
                        WarmCluster(
                            planned.cluster,
                            name,
                            planned.fingerprint,
                            self._progress.run_id,
                            queue,
                            until,
                            hourly.get(name),
                            self._lane_name,
                            now,
                            self._progress.repo,
                        )
                    )
        history = self._timings() if self._outcome is None else None
        if await self._hand_over(giving, history):
            names = {cluster.name for cluster in giving}
            self._up = [name for name in self._up if name not in names]
            self._clusters_down(sorted(names))  # the run's cost ends: the lane holds them

    def _timings(self) -> list[StageTiming]:
        """This run's stage timings, for the lane's next run to provision just in time."""
        assert self._progress is not None
        began = self._stages_began
        provisioned = {c.name: c.provision_s for c in self._progress.clusters}
        timings = []
        for planned in self._prepared.stages if self._prepared and began is not None else []:
            stage = next(s for s in self._progress.stages if s.name == planned.name)
            ready = self._ready_at.get(planned.name)
            took = provisioned.get(planned.cluster_name) or (
                stage.launch_s if stage.launched and not stage.cluster_reused_from else None
            )
            if ready is not None and began is not None and took:
                timings.append(StageTiming(planned.name, round(ready - began, 3), took))
        return timings

    async def _hand_over(
        self, clusters: list[WarmCluster], history: list[StageTiming] | None = None
    ) -> bool:
        """Give `clusters` to the lane (its coordinator keeps them warm), with a successful
        run's timings; False if it is gone, and then they are this run's to tear down."""
        if not clusters and history is None:
            return False
        try:
            await workflow.get_external_workflow_handle(self._lane).signal(
                SIGNAL_WARM, Handover(clusters, history)
            )
        except FailureError:
            self._up += [c.name for c in clusters if c.name not in self._up]
            return False
        return True

    async def _down(self, planned: PlannedStage, queue: str) -> None:
        names = [name for name in planned.down_after if name in self._up]
        if names:
            await self._down_clusters(names, queue)

    async def _down_clusters(self, names: list[str], queue: str) -> None:
        assert self._progress is not None
        try:
            await workflow.execute_activity_method(
                PipelineActivities.down_clusters,
                DownInput(self._progress.run_id, names),
                task_queue=queue,
                start_to_close_timeout=timedelta(minutes=20),
                schedule_to_start_timeout=self._gone_after,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=DOWN_RETRY,
            )
        except ActivityError as err:
            # Only a pinned run's worker can be gone; its local jobs died with it.
            if not not_started(err):
                raise
            self._left += [name for name in names if name not in self._left]
        self._up = [name for name in self._up if name not in names]
        self._clusters_down(names)

    async def _teardown(self, run_id: str, queue: str) -> None:
        if self._up:
            await self._down_clusters(list(self._up), queue)
        try:
            await workflow.execute_activity_method(
                PipelineActivities.cleanup_run,
                CleanupInput(run_id),
                task_queue=queue,
                start_to_close_timeout=timedelta(minutes=5),
                schedule_to_start_timeout=self._gone_after,
                schedule_to_close_timeout=timedelta(minutes=30),
            )
        except ActivityError as err:
            if not not_started(err):  # a gone worker removes the checkout when it starts again
                raise

    # -- cost (issue 14): the estimate before any launch, clusters' up times for the actual cost.

    def _estimated(self, prepared: PrepareOutput) -> None:
        """The estimate goes into the progress before the first report and the first launch."""
        assert self._progress is not None
        self._progress.estimate = list(prepared.estimate)
        self._progress.estimate_usd = prepared.estimate_usd
        self._progress.budget_usd = prepared.run_limit_usd

    async def _await_approval(self, prepared: PrepareOutput) -> None:
        """Wait in `awaiting_approval` (nothing launched) until approved; raise ApprovalExpired
        when its durable timer runs out first (the run then ends cancelled)."""
        assert self._progress is not None
        timeout = timedelta(seconds=prepared.approval_timeout_s or 86400)
        self._progress.approval = Approval(
            reason=prepared.approval_reason,
            estimate_usd=prepared.estimate_usd,
            limit_usd=prepared.approval_limit_usd,
            expires_at=(workflow.now() + timeout).isoformat(),
        )
        self._set_state(RunState.AWAITING_APPROVAL)
        try:
            await workflow.wait_condition(lambda: self._approved is not None, timeout=timeout)
        except TimeoutError:
            self._progress.error = EXPIRED.format(
                hours=timeout.total_seconds() / 3600, reason=prepared.approval_reason
            )
            self._finish_stages(StageState.SKIPPED, "")
            self._outcome = RunState.CANCELLED
            raise ApprovalExpired from None
        assert self._approved is not None
        self._progress.approval.approved_by = self._approved.user
        self._progress.approval.approved_at = workflow.now().isoformat()

    def _cluster_launching(self, planned: PlannedStage, since: str = "") -> None:
        """Its time up (and its cost) counts from the start of its launch: provisioning too; a
        warm cluster's from `since`, when the lane leased it (its time before, the lane's)."""
        assert self._progress is not None
        hourly = next(
            (e.hourly_usd for e in self._progress.estimate if e.cluster == planned.cluster), None
        )
        up_at = since or workflow.now().isoformat()
        self._progress.clusters = [
            c for c in self._progress.clusters if c.name != planned.cluster_name
        ] + [ClusterCost(planned.cluster, planned.cluster_name, hourly, up_at)]

    def _cluster_ran(self, planned: PlannedStage, seconds: float) -> None:
        assert self._progress is not None
        for cluster in self._progress.clusters:
            if cluster.name == planned.cluster_name and not cluster.down_at:
                cluster.busy_s = round(cluster.busy_s + seconds, 3)

    def _clusters_down(self, names: list[str]) -> None:
        """Its time up ends when its teardown finished."""
        assert self._progress is not None
        now = workflow.now().isoformat()
        for cluster in self._progress.clusters:
            if cluster.name in names and not cluster.down_at:
                cluster.down_at = now
        account(self._progress, now)

    def _mark_cancelled(self) -> None:
        assert self._progress is not None
        self._progress.error = (
            RUN_CANCELLED_BECAUSE.format(reason=self._notice) if self._notice else RUN_CANCELLED
        )
        now = workflow.now().isoformat()
        for stage in self._progress.stages:
            if stage.state is StageState.RUNNING:
                # Each stage of a DAG run that was running names itself.
                stage.state, stage.finished_at = StageState.CANCELLED, now
                stage.error = STAGE_CANCELLED.format(stage=stage.name)
        self._finish_stages(StageState.CANCELLED, STAGE_CANCELLED.format(stage=self._active))
        self._outcome = RunState.CANCELLED

    def _finish_stages(self, state: StageState, error: str) -> None:
        """Close the running stage with `error` and mark the ones that never started skipped."""
        assert self._progress is not None
        now = workflow.now().isoformat()
        for stage in self._progress.stages:
            if stage.state is StageState.RUNNING:
                stage.state = state
                stage.error = error
                stage.finished_at = now
            elif stage.state is StageState.PENDING:
                stage.state = StageState.SKIPPED

    def _set_state(self, state: RunState) -> None:
        assert self._progress is not None
        self._progress.state = state
        workflow.upsert_search_attributes([STATE_KEY.value_set(state.value)])
        self._changed()

    def _changed(self) -> None:
        self._version += 1

    def _start_reporters(self, request: RunRequest) -> None:
        if request.sweep is not None:
            return  # the sweep reports all its runs in one table (worker/sweep.py)
        wanted = []
        if request.github is not None:
            wanted.append("github")
        if request.slack is not None or self._notify_slack:
            wanted.append("slack")
        for name in wanted:
            if name not in self._reporters:
                self._handles.setdefault(name, {})
                self._reporters[name] = asyncio.create_task(self._report_loop(name, request))

    async def _report_loop(self, name: str, request: RunRequest) -> None:
        """Send the latest progress whenever it changed; older unsent states are skipped."""
        assert self._progress is not None
        reported = 0
        while True:
            # The condition is evaluated only while this iteration waits, so late binding is fine.
            await workflow.wait_condition(
                lambda: self._version > reported or self._closing  # noqa: B023
            )
            if self._version == reported:
                return
            version = self._version
            try:
                out = await workflow.execute_activity_method(
                    ReportingActivities.report_progress,
                    ReportInput(
                        reporter=name,
                        run_id=self._progress.run_id,
                        request=request,
                        progress=self.progress(),
                        handles=dict(self._handles[name]),
                        notify_slack=self._notify_slack,
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=REPORT_RETRY,
                )
                self._handles[name].update(out.handles)
            except (ActivityError, asyncio.CancelledError) as err:
                workflow.logger.warning("reporting to %s failed: %s", name, error_message(err))
            reported = version
