"""The sweep workflow: one pipeline run per combination of a `/skyrun sweep`, in parallel, and
one report (a pull request comment or a Slack message) with their results table.

The sweep's id is derived from the request (worker/sweepspec.py), so a redelivery starts nothing
new; each run is a child workflow whose id is derived from the sweep's and whose lane is its own,
so combinations never supersede each other or the lane's runs, and each is subject to the
deployment's capacity caps like any run. The sweep enters its lane's sweeps coordinator (a pool
that admits every sweep at once): cancelling the lane (`/skyrun cancel`) cancels the sweep there,
by coordination, and a cancelled sweep cancels its runs and waits until they are torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from worker.contract import SA_STATE, WORKFLOW_NAME, RunState
    from worker.coordinator import (
        COORDINATION_RETRY,
        SIGNAL_ADMITTED,
        SIGNAL_LEAVE,
        SIGNAL_NOTICE,
        CoordinatorActivities,
        CoordinatorState,
        EnterInput,
        Left,
        Notice,
        Ticket,
        lane_workflow_id,
    )
    from worker.runcontrol import SWEEPS_CAPACITY, run_attributes
    from worker.sweepreport import SweepReporting
    from worker.sweepspec import (
        QUERY_SWEEP,
        SWEEP_WORKFLOW,
        SweepReportInput,
        SweepRequest,
        SweepStatus,
        child_id,
        child_request,
        combinations,
        sweeps_key,
    )

STATE_KEY = SearchAttributeKey.for_keyword(SA_STATE)
SWEEP_CANCELLED = "the sweep was cancelled"
SWEEP_CANCELLED_BECAUSE = "the sweep was cancelled: {reason}"
REFRESH = timedelta(seconds=30)
"""How often a running sweep's table is refreshed between runs finishing (states, metrics)."""
REPORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)


@workflow.defn(name=SWEEP_WORKFLOW)
class SweepWorkflow:
    def __init__(self) -> None:
        self._status = SweepStatus(sweep_id="", run_ids=[])
        self._handles: dict[str, str] = {}
        self._admitted: set[str] = set()
        self._notice = ""
        self._entered = ""

    @workflow.signal(name=SIGNAL_ADMITTED)
    def admitted(self, coordinator: str) -> None:
        self._admitted.add(coordinator)

    @workflow.signal(name=SIGNAL_NOTICE)
    def notice(self, notice: Notice) -> None:
        self._notice = notice.reason

    @workflow.query(name=QUERY_SWEEP)
    def status(self) -> SweepStatus:
        return self._status

    @workflow.run
    async def run(self, request: SweepRequest) -> SweepStatus:
        info = workflow.info()
        status = self._status
        status.sweep_id = info.workflow_id
        status.started_at = workflow.now().isoformat()
        count = len(combinations(request.axes))
        status.run_ids = [child_id(info.workflow_id, index) for index in range(count)]
        children: list[workflow.ChildWorkflowHandle[object, object]] = []
        cancelled = False
        try:
            if request.base.lane:
                await self._enter(request)
            self._set_state(RunState.RUNNING)
            for index in range(count):
                children.append(await self._start_child(request, index))
            await self._report(request)
            while len(status.finished) < count:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: any(
                            child.done() and child.id not in status.finished for child in children
                        ),
                        timeout=REFRESH,
                    )
                status.finished += [
                    child.id
                    for child in children
                    if child.done() and child.id not in status.finished
                ]
                await self._report(request)
        except (asyncio.CancelledError, CancelledError):
            cancelled = True
        if cancelled:
            status.error = (
                SWEEP_CANCELLED_BECAUSE.format(reason=self._notice)
                if self._notice
                else SWEEP_CANCELLED
            )
            # Every run is cancelled and torn down before the sweep says it is over.
            for child in children:
                if not child.done():
                    child.cancel()
            for child in children:
                with contextlib.suppress(asyncio.CancelledError, FailureError):
                    await child
            status.finished = [child.id for child in children]
        outcome = RunState.CANCELLED if cancelled else await self._outcome(children)
        await self._leave()
        status.finished_at = workflow.now().isoformat()
        self._set_state(outcome)
        await self._report(request)
        if cancelled:
            raise CancelledError(status.error)
        return status

    async def _start_child(
        self, request: SweepRequest, index: int
    ) -> workflow.ChildWorkflowHandle[object, object]:
        info = workflow.info()
        run = child_request(request, info.workflow_id, index)
        run.requested_at = request.base.requested_at
        return await workflow.start_child_workflow(
            WORKFLOW_NAME,
            run,
            id=child_id(info.workflow_id, index),
            task_queue=info.task_queue,
            search_attributes=run_attributes(run),
            cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
            # A sweep that is terminated still lets its runs tear their clusters down.
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
        )

    @staticmethod
    async def _outcome(children: list[workflow.ChildWorkflowHandle[object, object]]) -> RunState:
        """Succeeded when every run succeeded, else failed (the table says which and why)."""
        for child in children:
            try:
                await child
            except (FailureError, asyncio.CancelledError):
                return RunState.FAILED
        return RunState.SUCCEEDED

    async def _enter(self, request: SweepRequest) -> None:
        """Enter the lane's sweeps coordinator (it admits at once; it cancels on `cancel`)."""
        info = workflow.info()
        key = sweeps_key(request.base.lane)
        coordinator = lane_workflow_id(key, info.task_queue)
        self._entered = coordinator
        await workflow.execute_activity_method(
            CoordinatorActivities.enter,
            EnterInput(
                coordinator,
                CoordinatorState(key, capacity=SWEEPS_CAPACITY, newest_wins=False),
                Ticket(info.workflow_id, info.run_id, request.base.requested_at),
                info.task_queue,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=COORDINATION_RETRY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await workflow.wait_condition(lambda: coordinator in self._admitted)

    async def _leave(self) -> None:
        if not self._entered:
            return
        info = workflow.info()
        with contextlib.suppress(FailureError):
            await workflow.get_external_workflow_handle(self._entered).signal(
                SIGNAL_LEAVE, Left(info.workflow_id, info.run_id)
            )
        self._entered = ""

    async def _report(self, request: SweepRequest) -> None:
        """Create or update the table; reporting never fails the sweep."""
        if request.base.github is None and request.base.slack is None:
            return
        try:
            out = await workflow.execute_activity_method(
                SweepReporting.report,
                SweepReportInput(request, self._status, dict(self._handles)),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=REPORT_RETRY,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            workflow.logger.warning("reporting the sweep failed: %s", err.cause or err)
            return
        self._handles.update(out.handles)

    def _set_state(self, state: RunState) -> None:
        self._status.state = state
        workflow.upsert_search_attributes([STATE_KEY.value_set(state.value)])
