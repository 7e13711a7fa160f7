"""The run a pull request's metrics are compared with: the latest success on its base branch."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionStatus

from worker.contract import RunResult, RunState, Trigger
from worker.runcontrol import runs_query

log = logging.getLogger(__name__)

CANDIDATES = 5
RESULT_TIMEOUT = timedelta(seconds=10)


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
        """A baseline from a reporter handle (empty means: looked, found none)."""
        if not text:
            return None
        data = json.loads(text)
        return cls(data["run_id"], data["commit"], data["ref"], dict(data["metrics"]))


class Baselines:
    """Finds baselines through Temporal visibility; a finished run's result holds its metrics."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def latest(self, repo: str, ref: str, exclude: str = "") -> Baseline | None:
        query = runs_query(
            repo=repo, ref=ref, state=RunState.SUCCEEDED.value, trigger=Trigger.PUSH.value
        )
        async for execution in self.client.list_workflows(query, limit=CANDIDATES):
            # A closed run's result is in its history: no worker has to replay it.
            if execution.id == exclude or execution.status is not WorkflowExecutionStatus.COMPLETED:
                continue
            handle = self.client.get_workflow_handle(
                execution.id, run_id=execution.run_id, result_type=RunResult
            )
            try:
                result = await handle.result(rpc_timeout=RESULT_TIMEOUT)
            except Exception as err:  # a broken candidate must not break reporting
                log.warning("baseline %s unreadable: %s", execution.id, err)
                continue
            if result.progress.metrics:
                return Baseline(
                    run_id=execution.id,
                    commit=result.progress.commit,
                    ref=ref,
                    metrics=result.progress.metrics,
                )
        return None
