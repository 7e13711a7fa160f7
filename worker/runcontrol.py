"""Start, cancel and look up runs: the one module every front door (webhook, Slack, CLI) uses."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from worker.contract import (
    QUERY_PROGRESS,
    SA_COMMIT,
    SA_DELIVERY,
    SA_LANE,
    SA_PR,
    SA_REF,
    SA_REPO,
    SA_STATE,
    SA_TRIGGER,
    SA_USER,
    SIGNAL_APPROVE,
    WORKFLOW_NAME,
    Approve,
    RunProgress,
    RunRequest,
    RunState,
    run_id_for,
)
from worker.coordinator import (
    COORDINATOR_WORKFLOW,
    QUERY_MEMBERS,
    QUERY_WARM,
    SIGNAL_CANCEL_ALL,
    CancelAll,
    CoordinatorState,
    Members,
    WarmCluster,
    lane_workflow_id,
)
from worker.limits import check_request
from worker.retry import (
    E_NOT_A_RUN,
    RetryPlan,
    RetryRefused,
    plan_retry,
    refusal,
    retry_request,
    retry_run_id,
)
from worker.sweepspec import SWEEP_WORKFLOW, SweepRequest, check_size, sweep_id_for, sweeps_key

log = logging.getLogger(__name__)

REPO = SearchAttributeKey.for_keyword(SA_REPO)
LANE = SearchAttributeKey.for_keyword(SA_LANE)
REF = SearchAttributeKey.for_keyword(SA_REF)
COMMIT = SearchAttributeKey.for_keyword(SA_COMMIT)
TRIGGER = SearchAttributeKey.for_keyword(SA_TRIGGER)
USER = SearchAttributeKey.for_keyword(SA_USER)
STATE = SearchAttributeKey.for_keyword(SA_STATE)
DELIVERY = SearchAttributeKey.for_keyword(SA_DELIVERY)
PR = SearchAttributeKey.for_int(SA_PR)

_STATUS_STATES = {
    WorkflowExecutionStatus.RUNNING: RunState.RUNNING,
    WorkflowExecutionStatus.COMPLETED: RunState.SUCCEEDED,
    WorkflowExecutionStatus.FAILED: RunState.FAILED,
    WorkflowExecutionStatus.CANCELED: RunState.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: RunState.CANCELLED,
    WorkflowExecutionStatus.TIMED_OUT: RunState.TIMED_OUT,
}


LANE_CANCELLED = "its lane was cancelled"
NOT_A_RUN = "no run with id {run_id} (see `skyrun runs`)"
NOT_WAITING = "run {run_id} does not wait for approval (it is {state})"
MEMBERS_TIMEOUT = timedelta(seconds=2)


@dataclass
class StartOutcome:
    run_id: str
    started: bool
    """False when the same work was already running (or this delivery already started it)."""
    superseded: list[str] = field(default_factory=list)
    """The lane's runs its coordinator held or queued just before: this newer one cancels them."""


@dataclass
class RetryOutcome:
    """What `RunControl.retry` did: the retry's run, and whether this call started it."""

    run_id: str
    started: bool
    """False when the run was already retried (as `run_id`): a run is retried exactly once."""
    retry_of: str
    plan: RetryPlan
    request: RunRequest


@dataclass
class RunSummary:
    run_id: str
    repo: str
    ref: str
    commit: str
    trigger: str
    requested_by: str
    state: RunState
    pr_number: int | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def _quote(value: str) -> str:
    # Visibility queries cannot carry NUL or other control characters; no run is started with
    # one (refs are checked at the doors), so a stand-in keeps the filter matching nothing.
    value = "".join(ch if ch >= " " and ch != "\x7f" else "\ufffd" for ch in value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def runs_query(
    *,
    repo: str | None = None,
    lane: str | None = None,
    ref: str | None = None,
    pr: int | None = None,
    state: str | None = None,
    trigger: str | None = None,
    running_only: bool = False,
    task_queue: str | None = None,
) -> str:
    """A Temporal visibility query for runs matching the given filters; with `task_queue`, only
    one deployment's runs (its task queue) in a namespace that others may share."""
    parts = [f"WorkflowType = {_quote(WORKFLOW_NAME)}"]
    for attr, value in (
        (SA_REPO, repo),
        (SA_LANE, lane),
        (SA_REF, ref),
        (SA_STATE, state),
        (SA_TRIGGER, trigger),
    ):
        if value:
            parts.append(f"{attr} = {_quote(value)}")
    if pr is not None:
        parts.append(f"{SA_PR} = {int(pr)}")
    if running_only:
        parts.append("ExecutionStatus = 'Running'")
    if task_queue:
        parts.append(f"TaskQueue = {_quote(task_queue)}")
    return " AND ".join(parts)


def summary_of(execution: WorkflowExecution) -> RunSummary:
    attrs = execution.typed_search_attributes
    state_text = attrs.get(STATE)
    status_state = _STATUS_STATES.get(execution.status or WorkflowExecutionStatus.RUNNING)
    state = RunState(state_text) if state_text else status_state or RunState.QUEUED
    if execution.status not in (None, WorkflowExecutionStatus.RUNNING) and not state.finished:
        state = status_state or RunState.FAILED
    return RunSummary(
        run_id=execution.id,
        repo=attrs.get(REPO) or "",
        ref=attrs.get(REF) or "",
        commit=attrs.get(COMMIT) or "",
        trigger=attrs.get(TRIGGER) or "",
        requested_by=attrs.get(USER) or "",
        state=state,
        pr_number=attrs.get(PR),
        started_at=execution.start_time,
        finished_at=execution.close_time,
    )


class RunControl:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start(self, request: RunRequest) -> StartOutcome:
        """Start a run; the same work twice maps to one run (its id says what the work is).

        Which run of a lane computes is decided by the lane's coordinator, which the run enters
        by itself (worker/coordinator.py): a newer request supersedes the lane's others.
        Raises RequestTooLarge (a ValueError naming the field and the limit) for a request that
        would not fit into the run's history.
        """
        check_request(request)
        if not request.requested_at:
            request.requested_at = time.time_ns()
        run_id = run_id_for(request)
        others = [other for other in await self.lane_members(request.lane) if other != run_id]
        # Without a commit the id includes the delivery: a repeated delivery is refused forever.
        per_delivery = bool(request.delivery_id and not request.commit)
        try:
            await self.client.start_workflow(
                WORKFLOW_NAME,
                request,
                id=run_id,
                task_queue=self.task_queue,
                id_reuse_policy=(
                    WorkflowIDReusePolicy.REJECT_DUPLICATE
                    if per_delivery
                    else WorkflowIDReusePolicy.ALLOW_DUPLICATE
                ),
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=self._attributes(request),
            )
        except WorkflowAlreadyStartedError:
            return StartOutcome(run_id, started=False)
        log.info("run started", extra={"run_id": run_id, "repo": request.repo})
        return StartOutcome(run_id, started=True, superseded=others)

    @staticmethod
    def _attributes(request: RunRequest) -> TypedSearchAttributes:
        pairs: list[SearchAttributePair[str] | SearchAttributePair[int]] = [
            SearchAttributePair(REPO, request.repo),
            SearchAttributePair(LANE, request.lane),
            SearchAttributePair(REF, request.ref),
            SearchAttributePair(COMMIT, request.commit),
            SearchAttributePair(TRIGGER, request.trigger.value),
            SearchAttributePair(USER, request.requested_by),
            SearchAttributePair(STATE, RunState.QUEUED.value),
        ]
        if request.delivery_id:
            pairs.append(SearchAttributePair(DELIVERY, request.delivery_id))
        if request.github and request.github.pr_number is not None:
            pairs.append(SearchAttributePair(PR, request.github.pr_number))
        return TypedSearchAttributes(pairs)

    async def cancel(self, run_id: str) -> bool:
        """Ask a run to cancel (its clusters are still torn down); False if it is not running."""
        try:
            handle = self.client.get_workflow_handle(run_id)
            desc = await handle.describe()
            if desc.status is not WorkflowExecutionStatus.RUNNING:
                return False
            await handle.cancel()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def cancel_lane(
        self, lane: str, reason: str = LANE_CANCELLED, requested_at: int = 0
    ) -> list[str]:
        """Cancel every run of the lane, and any requested before `requested_at` (default: now)
        that has yet to enter it.

        Returns the runs the lane's coordinator held or queued when asked.
        """
        run_ids = await self.lane_members(lane)
        order = CancelAll(reason, requested_at or time.time_ns())
        await self.client.start_workflow(
            COORDINATOR_WORKFLOW,
            CoordinatorState(lane),
            id=lane_workflow_id(lane, self.task_queue),
            task_queue=self.task_queue,
            start_signal=SIGNAL_CANCEL_ALL,
            start_signal_args=[order],
        )
        return run_ids + await self._cancel_sweeps(lane, order)

    async def warm_clusters(self, limit: int = 200) -> list[WarmCluster]:
        """Every warm cluster the deployment's lanes hold now, soonest expiry first. A list to
        show (visibility finds the coordinators, each one's query says what it holds)."""
        query = (
            f"WorkflowType = {_quote(COORDINATOR_WORKFLOW)} AND ExecutionStatus = 'Running' "
            f"AND TaskQueue = {_quote(self.task_queue)}"
        )
        ids = [execution.id async for execution in self.client.list_workflows(query, limit=limit)]

        async def held(workflow_id: str) -> list[WarmCluster]:
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                found: list[WarmCluster] = await handle.query(
                    QUERY_WARM, result_type=list[WarmCluster], rpc_timeout=MEMBERS_TIMEOUT
                )
            except (RPCError, WorkflowQueryFailedError):
                return []
            return found

        every = [c for found in await asyncio.gather(*(held(i) for i in ids)) for c in found]
        return sorted(every, key=lambda cluster: cluster.until)

    async def lane_members(self, lane: str) -> list[str]:
        """The runs the lane's coordinator holds or queues now, as far as it answers in time.

        For messages only: nothing that must be exact depends on it (a query needs a worker).
        """
        if not lane:
            return []
        handle = self.client.get_workflow_handle(lane_workflow_id(lane, self.task_queue))
        try:
            members: Members = await handle.query(
                QUERY_MEMBERS, result_type=Members, rpc_timeout=MEMBERS_TIMEOUT
            )
        except (RPCError, WorkflowQueryFailedError):
            return []
        return [*members.holders, *members.waiting]

    async def progress(self, run_id: str) -> RunProgress | None:
        """The run's live (or final) progress; None when there is no such run."""
        try:
            progress: RunProgress = await self.client.get_workflow_handle(run_id).query(
                QUERY_PROGRESS, result_type=RunProgress
            )
            return progress
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return None
            raise
        except WorkflowQueryFailedError:
            return None

    async def approve(self, run_id: str, user: str, via: str = "") -> str:
        """Let a run that waits for budget approval go; "" when done, else why not (in words)."""
        progress = await self.progress(run_id)
        if progress is None:
            return NOT_A_RUN.format(run_id=run_id)
        if progress.state is not RunState.AWAITING_APPROVAL:
            return NOT_WAITING.format(run_id=run_id, state=progress.state.value)
        await self.client.get_workflow_handle(run_id).signal(
            SIGNAL_APPROVE, Approve(user=user, via=via)
        )
        return ""

    async def summary(self, run_id: str) -> RunSummary | None:
        try:
            desc = await self.client.get_workflow_handle(run_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        if desc.workflow_type != WORKFLOW_NAME:
            return None
        return summary_of(desc)

    async def list_runs(self, *, limit: int = 50, **filters: object) -> list[RunSummary]:
        """This deployment's runs (newest first) matching `filters` (see `runs_query`)."""
        query = runs_query(task_queue=self.task_queue, **filters)  # type: ignore[arg-type]
        return [
            summary_of(execution)
            async for execution in self.client.list_workflows(query, limit=limit)
        ]

    # Retry from the failed stage (worker/retry.py).
    async def request_of(self, run_id: str) -> RunRequest | None:
        """The request a run was started with (its history's first event), or None."""
        handle = self.client.get_workflow_handle(run_id)
        try:
            async for event in handle.fetch_history_events():
                started = event.workflow_execution_started_event_attributes
                if started.workflow_type.name != WORKFLOW_NAME:
                    return None
                payloads = list(started.input.payloads)
                if not payloads:
                    return None
                (request,) = await self.client.data_converter.decode(payloads[:1], [RunRequest])
                return request if isinstance(request, RunRequest) else None
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return None
            raise
        return None

    async def retry(self, run_id: str, **changes: object) -> RetryOutcome:
        """Start the retry of a finished run from its failed stage (see worker/retry.py).

        The retry runs the same commit, ref, lane, stages and values; its id is derived from
        `run_id`, so retrying the same run twice gives one retry (`started` False the second
        time). `changes` set who asks and where it reports (requested_by, trigger, github,
        slack, requested_at). Raises RetryRefused with the reason: not found, still running,
        succeeded, nothing to retry.
        """
        original = await self.request_of(run_id)
        if original is None:
            if await self.summary(run_id) is None and await self._exists(run_id):
                raise RetryRefused(E_NOT_A_RUN.format(run_id=run_id))
            raise RetryRefused(refusal(None, run_id))
        progress = await self.progress(run_id)
        reason = refusal(progress, run_id)
        if reason:
            raise RetryRefused(reason)
        assert progress is not None
        plan = plan_retry(progress)
        request = retry_request(original, progress, plan, **changes)
        if not request.requested_at:
            request.requested_at = time.time_ns()
        check_request(request)
        retry_id = retry_run_id(run_id)
        try:
            await self.client.start_workflow(
                WORKFLOW_NAME,
                request,
                id=retry_id,
                task_queue=self.task_queue,
                # A run is retried once: a second retry (even after the first ended) finds it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=self._attributes(request),
            )
        except WorkflowAlreadyStartedError:
            return RetryOutcome(retry_id, False, run_id, plan, request)
        log.info("retry started", extra={"run_id": retry_id, "retry_of": run_id})
        return RetryOutcome(retry_id, True, run_id, plan, request)

    async def _exists(self, run_id: str) -> bool:
        try:
            await self.client.get_workflow_handle(run_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    # Sweeps (`/skyrun sweep`): one coordinating workflow per request, starting one run per
    # combination (worker/sweep.py); every sweep of a lane is a member of the lane's sweeps
    # coordinator (a pool), so cancelling the lane reaches them by coordination.

    async def start_sweep(self, request: SweepRequest, limit: int) -> StartOutcome:
        """Start a sweep; the same request twice (a redelivery) maps to one sweep.

        Raises SweepTooLarge past `limit` combinations and RequestTooLarge for a request that
        would not fit into a run's history (both ValueErrors naming the problem).
        """
        check_size(request.axes, limit)
        check_request(request.base)
        if not request.base.requested_at:
            request.base.requested_at = time.time_ns()
        sweep_id = sweep_id_for(request)
        try:
            await self.client.start_workflow(
                SWEEP_WORKFLOW,
                request,
                id=sweep_id,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=self._attributes(request.base),
            )
        except WorkflowAlreadyStartedError:
            return StartOutcome(sweep_id, started=False)
        log.info("sweep started", extra={"run_id": sweep_id, "repo": request.base.repo})
        return StartOutcome(sweep_id, started=True)

    async def _cancel_sweeps(self, lane: str, order: CancelAll) -> list[str]:
        """Cancel the lane's sweeps (and with them their runs); returns the sweeps' ids."""
        key = sweeps_key(lane)
        sweep_ids = await self.lane_members(key)
        await self.client.start_workflow(
            COORDINATOR_WORKFLOW,
            CoordinatorState(key, capacity=SWEEPS_CAPACITY, newest_wins=False),
            id=lane_workflow_id(key, self.task_queue),
            task_queue=self.task_queue,
            start_signal=SIGNAL_CANCEL_ALL,
            start_signal_args=[order],
        )
        return sweep_ids

    async def sweep_summary(self, sweep_id: str) -> RunSummary | None:
        """A sweep as a summary (repository, who started it, state), or None if there is none."""
        try:
            desc = await self.client.get_workflow_handle(sweep_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        if desc.workflow_type != SWEEP_WORKFLOW:
            return None
        return summary_of(desc)


def run_attributes(request: RunRequest) -> TypedSearchAttributes:
    """The search attributes a run starts with (a sweep gives them to each of its runs)."""
    return RunControl._attributes(request)


SWEEPS_CAPACITY = 1_000_000
"""A lane's sweeps coordinator admits every sweep at once: it exists to cancel them together."""
