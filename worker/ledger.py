"""Monthly budgets (SKYRUN_MONTHLY_BUDGETS): what a repository's runs cost this calendar month.

One `SkyrunLedger` workflow per repository, month (UTC) and deployment (its task queue) holds the
actual cost of every run that ended in that month, by run id, so a repeated record of one run
counts once. Each run records its cost after its teardown, by signal-with-start from an activity
(`record_cost`); `prepare_run` asks the ledger (a query, which reads the workflow's own state, not
eventually consistent visibility) before it judges a new run's estimate.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

LEDGER_WORKFLOW = "SkyrunLedger"
SIGNAL_RECORD = "ledger_record"
QUERY_SPENT = "ledger_spent"
QUERY_HAS = "ledger_has"
CONFIRM_EVERY_S = 0.1
CONFIRM_FOR_S = 20.0
NOT_CONFIRMED = "the ledger {ledger} did not show the cost of {run} within {seconds:g} s"
RECORD_COST = "record_cost"
KEEP_AFTER_MONTH = timedelta(days=40)
"""How long a ledger stays after its month began: past the month, nothing asks it any more."""
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
CONTINUE_AFTER = 2_000
"""Records before the ledger continues as new (its history stays small)."""


@dataclass
class LedgerState:
    repo: str
    month: str
    """`2026-12`: the calendar month (UTC) the costs are of."""
    costs: dict[str, float] = field(default_factory=dict)
    """Run id → its actual cost in US dollars."""


@dataclass
class CostRecord:
    run_id: str
    usd: float


@dataclass
class RecordInput:
    repo: str
    month: str
    task_queue: str
    record: CostRecord


def month_of(iso_time: str) -> str:
    """`2026-12` of an ISO time (UTC, as workflow.now() gives it)."""
    return iso_time[:7]


def ledger_id(repo: str, month: str, task_queue: str) -> str:
    """One ledger per repository, month and deployment; the id stays short and valid."""
    digest = hashlib.sha256(f"{task_queue}\n{repo}".encode()).hexdigest()[:16]
    return f"skyrun-ledger-{month}-{digest}"


@workflow.defn(name=LEDGER_WORKFLOW)
class LedgerWorkflow:
    def __init__(self) -> None:
        # Signal handlers may run before `run` (signal-with-start delivers the signal first).
        self._costs: dict[str, float] = {}
        self._records = 0

    @workflow.signal(name=SIGNAL_RECORD)
    def record(self, record: CostRecord) -> None:
        if record.usd >= 0:
            self._costs[record.run_id] = record.usd
            self._records += 1

    @workflow.query(name=QUERY_HAS)
    def has(self, run_key: str) -> bool:
        return run_key in self._costs

    @workflow.query(name=QUERY_SPENT)
    def spent(self) -> float:
        return round(sum(self._costs.values()), 6)

    @workflow.run
    async def run(self, state: LedgerState) -> LedgerState:
        self._costs = {**state.costs, **self._costs}
        try:
            await workflow.wait_condition(
                lambda: self._records >= CONTINUE_AFTER, timeout=KEEP_AFTER_MONTH
            )
        except TimeoutError:
            return LedgerState(state.repo, state.month, self._costs)
        # Signals that arrive meanwhile are delivered to the next run of the ledger.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(LedgerState(state.repo, state.month, self._costs))


class LedgerActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name=RECORD_COST)
    async def record_cost(self, data: RecordInput) -> None:
        """Signal-with-start the month's ledger of the repository with one run's cost, and
        return once the ledger shows it: a run that closes after this is counted by every later
        `spent_this_month` (a query sees only the signals the workflow has processed)."""
        ledger = ledger_id(data.repo, data.month, data.task_queue)
        handle = await self.client.start_workflow(
            LEDGER_WORKFLOW,
            LedgerState(data.repo, data.month),
            id=ledger,
            task_queue=data.task_queue,
            start_signal=SIGNAL_RECORD,
            start_signal_args=[data.record],
        )
        deadline = time.monotonic() + CONFIRM_FOR_S
        while time.monotonic() < deadline:
            if await handle.query(QUERY_HAS, data.record.run_id, result_type=bool):
                return
            await asyncio.sleep(CONFIRM_EVERY_S)
        message = NOT_CONFIRMED.format(ledger=ledger, run=data.record.run_id, seconds=CONFIRM_FOR_S)
        raise ApplicationError(message, type="LedgerNotConfirmed")


async def spent_this_month(client: Client, repo: str, month: str, task_queue: str) -> float:
    """What the repository's runs that ended this month cost (0 when none recorded yet)."""
    handle = client.get_workflow_handle(ledger_id(repo, month, task_queue))
    try:
        return float(await handle.query(QUERY_SPENT, result_type=float))
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return 0.0
        raise
