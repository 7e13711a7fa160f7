"""The baseline of a run, one rule for every surface (PR comment, check run, Slack, run pages, API):
the latest successful run, started before this one, of the same repository on the PR's base
branch (for a pull-request or merge-group run) or on the same branch (otherwise), whatever
triggered it.

Found through Temporal visibility, limited to this deployment's task queue; a closed run's
metrics come from its result in history, so no worker has to answer for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus

from worker.contract import RunProgress, RunResult, RunState, Trigger
from worker.formatting import parse_time
from worker.runcontrol import runs_query

log = logging.getLogger(__name__)

CANDIDATES = 20
"""Visibility rows read per lookup; the newest of them that has metrics wins."""
TRIES = 5
"""Results read at most per lookup (a candidate without metrics does not count as a baseline)."""
RESULT_TIMEOUT = timedelta(seconds=10)
LOOKUP_TIMEOUT_S = 20.0
"""A reporter waits this long for a lookup, then reports without a comparison (and tries later)."""
HANDLE = "baseline"
"""The reporter handle that keeps a run's baseline (`Baseline.dumps`; empty: none)."""
HANDLE_FINAL = "baseline_final"
"""Set once the baseline was looked up with the run finished: it is not looked up again."""
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass
class Baseline:
    run_id: str
    commit: str
    ref: str
    metrics: dict[str, float]

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> Baseline | None:
        """A baseline saved with `dumps` (empty means: looked, found none)."""
        if not text:
            return None
        data = json.loads(text)
        return cls(data["run_id"], data["commit"], data["ref"], dict(data["metrics"]))


def baseline_ref(progress: RunProgress) -> str:
    """The branch whose runs this one is compared with ("" when a PR run's base is unknown)."""
    if progress.pr_number is not None or progress.trigger is Trigger.MERGE_GROUP:
        return progress.base_ref
    return progress.ref


class Baselines:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def of(self, progress: RunProgress) -> Baseline | None:
        """`progress`'s baseline, or None when there is none (or no branch to look on)."""
        ref = baseline_ref(progress)
        if not ref:
            return None
        started = parse_time(progress.started_at)
        query = runs_query(
            repo=progress.repo,
            ref=ref,
            state=RunState.SUCCEEDED.value,
            task_queue=self.task_queue or None,
        )
        candidates = [
            execution
            async for execution in self.client.list_workflows(query, limit=CANDIDATES)
            if execution.id != progress.run_id
            and execution.status is WorkflowExecutionStatus.COMPLETED
            and not (started and execution.start_time and execution.start_time >= started)
        ]
        candidates.sort(key=lambda execution: execution.start_time or _EPOCH, reverse=True)
        for execution in candidates[:TRIES]:
            handle = self.client.get_workflow_handle(
                execution.id, run_id=execution.run_id, result_type=RunResult
            )
            try:
                result = await handle.result(rpc_timeout=RESULT_TIMEOUT)
            except Exception as err:  # a broken candidate must not break reporting
                log.warning("baseline candidate %s unreadable: %s", execution.id, err)
                continue
            if result.progress.metrics:
                return Baseline(execution.id, result.progress.commit, ref, result.progress.metrics)
        return None

    async def remembered(self, progress: RunProgress, handles: dict[str, str]) -> Baseline | None:
        """`progress`'s baseline, kept in a reporter's `handles` so a retried or later report
        does not look it up again (and every report of the run compares with the same run).

        Looked up when the run has metrics, and once more when it has finished (a run started
        before it may have succeeded meanwhile). A failed lookup is logged and not kept, so the
        next report tries again; `HANDLE in handles` says whether the baseline is known.
        """
        due = HANDLE not in handles or (progress.state.finished and HANDLE_FINAL not in handles)
        if due and progress.metrics and baseline_ref(progress):
            try:
                found = await asyncio.wait_for(self.of(progress), LOOKUP_TIMEOUT_S)
            except Exception as err:  # the comparison is a nicety: never fail a report for it
                log.warning("no baseline for run %s yet: %r", progress.run_id, err)
            else:
                handles[HANDLE] = found.dumps() if found else ""
                if progress.state.finished:
                    handles[HANDLE_FINAL] = "1"
        return Baseline.loads(handles.get(HANDLE, ""))
