"""Coordinators: one workflow per lane (and, with the same code, per capacity pool) decides
which runs may compute, so exclusion never depends on a visibility query.

A run enters its coordinator by signal-with-start (the workflow id is derived from the lane or
pool), waits until it is admitted, and leaves after its teardown. Requests carry the time their
front door received them, and the coordinator orders by that, not by when a run's signal happens
to arrive.

A lane (capacity 1, the newest wins):

- a request newer than every other supersedes them: the running run is cancelled gracefully
  (its job stopped, its clusters torn down) and waiting ones end cancelled without computing;
- a request older than one already seen ends cancelled at once;
- the next run is admitted only when the holder has left.

A pool (capacity N, first come first served): runs wait in the order they were requested and
are admitted as holders leave. Each waiting run is told its place in line (and who is just
ahead) whenever it changes; the newest request's capacity is the pool's (worker/capacity.py
explains the caps built on pools, and why entering two of them cannot deadlock).

A holder that vanished without leaving (terminated by an operator) is noticed by a periodic
describe, which is strongly consistent. A coordinator closes itself after a quiet hour and
continues as new when its history grows, carrying its state.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from worker.contract import slug
    from worker.ledger import LEDGER_RETRY, CostRecord, LedgerActivities, RecordInput, month_of

COORDINATOR_WORKFLOW = "SkyrunCoordinator"
SIGNAL_ENTER = "coordinator_enter"
SIGNAL_LEAVE = "coordinator_leave"
SIGNAL_CANCEL_ALL = "coordinator_cancel_all"
QUERY_MEMBERS = "coordinator_members"
# Signals a coordinator sends to its runs.
SIGNAL_ADMITTED = "coordinator_admitted"
SIGNAL_NOTICE = "coordinator_notice"
SIGNAL_POSITION = "coordinator_position"
# Warm clusters (issue 12): a lane holds its last run's clusters for the next one.
SIGNAL_WARM = "coordinator_warm"
"""A run hands its clusters to its lane, to stay up until their warm time ends (`Handover`)."""
SIGNAL_LEASE = "coordinator_lease"
"""The lane gives its warm clusters to the run it admits, just before admitting it (`Lease`)."""
QUERY_WARM = "coordinator_warm_clusters"
DOWN_WARM = "down_clusters"
"""The worker activity that tears clusters down (worker/activities.py)."""
# Pools started before places in line existed replay without the position signals.
PATCH_POSITIONS = "capacity"
PATCH_WARM_UPKEEP = "warm-upkeep"
"""Expired warm clusters are torn down beside the loop, not in it (it admitted no run
meanwhile), and the time a cluster spends warm is charged to its repository's month."""
WARM_COST_KEY = "warm:{name}:{since}"
"""A warm spell's record in the ledger (one per cluster and start of its warm time)."""

SUPERSEDED = "superseded by run {run_id}, a newer request for this lane"
STALE = "superseded by run {run_id}, which was requested after this one"

IDLE = timedelta(hours=1)
WARM_DOWN_GIVES_UP = timedelta(hours=6)
CHECK_EVERY = timedelta(minutes=2)
MAX_HISTORY = 5_000
REMEMBERED = 256
"""How many runs that left a coordinator remembers, so a late `enter` of one is ignored."""

# Coordination never gives up (the coordinators' own activities, and runs entering them): a run
# must not lose its place in line over a blip.
COORDINATION_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)


def _workflow_id(kind: str, key: str, task_queue: str) -> str:
    # The deployment's task queue is part of the identity: deployments sharing a namespace
    # must not queue behind each other's runs (their workers may be down).
    identity = f"{task_queue}\n{key}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(identity).hexdigest()[:16]
    return f"skyrun-{kind}-{slug(key, 60)}-{digest}"


def lane_workflow_id(lane: str, task_queue: str) -> str:
    """The lane coordinator's workflow id in one deployment (its task queue): readable, and
    unique for every lane string."""
    return _workflow_id("lane", lane, task_queue)


def pool_workflow_id(pool: str, task_queue: str) -> str:
    """A capacity pool's coordinator (a repository's `concurrency`, the deployment's cap)."""
    return _workflow_id("pool", pool, task_queue)


@dataclass
class Ticket:
    run_id: str
    """The run's workflow id (shown to people)."""
    execution: str
    """Its Temporal run id: a workflow id may be reused by a later run of the same work."""
    requested_at: int
    """Nanoseconds since the epoch when a front door received the request."""
    # Capacity pools (worker/capacity.py).
    label: str = ""
    """How the runs behind this one see it named (`acme/models#41`); "" means its run id."""
    capacity: int = 0
    """The pool's capacity as this run's configuration says (0: leave it as it is)."""


@dataclass
class Position:
    """A waiting run's place in a pool's line (sent whenever it changes)."""

    coordinator: str
    position: int
    """1 = next to be admitted."""
    ahead: str
    """The label of the run just ahead in line ("" when next)."""
    capacity: int


@dataclass
class CancelAll:
    reason: str
    requested_at: int
    """Requests received before this are cancelled too, even if their run enters later."""


@dataclass
class Notice:
    """Why the coordinator is about to cancel a run (sent just before the cancellation)."""

    reason: str


@dataclass
class Left:
    run_id: str
    execution: str
    taken: list[str] = field(default_factory=list)
    """Warm clusters (names) the run launched on; the rest of its lease goes back to the lane."""


@dataclass
class WarmCluster:
    """A cluster a finished run left up for its lane's next run (`keep_warm_minutes`)."""

    cluster: str
    """Its name in the pipeline file (`cluster:`)."""
    name: str
    """The backend's cluster name (the run that launched it is in it)."""
    fingerprint: str
    """What it was launched with (backend and resources): reused only by a stage that asks
    for the same."""
    run_id: str
    """The run that launched it."""
    queue: str
    """The task queue of the worker that can reach it (and tear it down)."""
    until: str
    """When its warm time ends (ISO 8601): downed then unless a run took it."""
    hourly_usd: float | None = None
    lane: str = ""
    since: str = ""
    """When it became warm (its run ended, or the lane last leased it): its time warm costs from
    here, charged to `repo`'s month when a run takes it or it is downed."""
    repo: str = ""


@dataclass
class WarmDown:
    """`down_clusters`'s input (worker/models.py DownInput), as the coordinator sends it."""

    run_id: str
    cluster_names: list[str]


@dataclass
class StageTiming:
    """How a stage went in the lane's last successful run, to time the next one's
    provisioning ahead of it (so its cluster is ready when its needs finish)."""

    stage: str
    ready_after_s: float
    """From the start of the run's stages until this stage's needs were met."""
    provision_s: float
    """How long launching (and setting up) its cluster took."""


@dataclass
class Handover:
    clusters: list[WarmCluster]
    history: list[StageTiming] | None = None
    """A successful run's stage timings (None: keep the lane's)."""


@dataclass
class Lease:
    clusters: list[WarmCluster]
    history: list[StageTiming] = field(default_factory=list)


@dataclass
class Leased:
    """Warm clusters a lane gave a run, until it leaves (saying which it took)."""

    execution: str
    clusters: list[WarmCluster]


@dataclass
class CoordinatorState:
    key: str
    """The lane or pool this coordinator is for."""
    capacity: int = 1
    newest_wins: bool = True
    """A lane: a newer request supersedes the others. A pool: first come, first served."""
    holders: list[Ticket] = field(default_factory=list)
    waiting: list[Ticket] = field(default_factory=list)
    newest_at: int = 0
    stale: str = ""
    """Why a request older than `newest_at` is cancelled as soon as it enters."""
    superseded: list[Ticket] = field(default_factory=list)
    """Members already told to cancel (not told twice), until they leave."""
    left: list[str] = field(default_factory=list)
    """Executions that left: an `enter` of one arriving late is ignored."""
    check_every_s: int = int(CHECK_EVERY.total_seconds())
    """How often a busy lane makes sure its members still run (a terminated one never leaves)."""
    capacity_at: int = 0
    """`requested_at` of the request whose capacity the pool has (the newest one that set it)."""
    warm: list[WarmCluster] = field(default_factory=list)
    """A lane's warm clusters nobody holds now, until their time ends or a run takes them."""
    leased: list[Leased] = field(default_factory=list)
    history: list[StageTiming] = field(default_factory=list)
    """The stage timings of the lane's last successful run."""
    downing: list[WarmCluster] = field(default_factory=list)
    """Warm clusters whose time ended, being torn down (again after a continue-as-new)."""


@dataclass
class Members:
    holders: list[str]
    waiting: list[str]
    """In the order they will be admitted (1st in line first)."""


@dataclass
class EnterInput:
    workflow_id: str
    state: CoordinatorState
    """What the coordinator starts with when it is not running yet."""
    ticket: Ticket
    task_queue: str


@dataclass
class ClosedRunsInput:
    members: list[Ticket]


@dataclass
class ClosedRunsOutput:
    executions: list[str]


@workflow.defn(name=COORDINATOR_WORKFLOW)
class CoordinatorWorkflow:
    def __init__(self) -> None:
        self._state = CoordinatorState(key="")
        self._inbox: list[Ticket | CancelAll | Left | Handover] = []
        self._told: dict[str, tuple[int, str, int]] = {}
        """The place each waiting execution was last told (position, ahead, capacity)."""
        self._downs: set[asyncio.Task[None]] = set()
        self._charges: set[asyncio.Task[None]] = set()

    @workflow.signal(name=SIGNAL_ENTER)
    def enter(self, ticket: Ticket) -> None:
        self._inbox.append(ticket)

    @workflow.signal(name=SIGNAL_LEAVE)
    def leave(self, left: Left) -> None:
        self._inbox.append(left)

    @workflow.signal(name=SIGNAL_WARM)
    def warm(self, handover: Handover) -> None:
        self._inbox.append(handover)

    @workflow.query(name=QUERY_WARM)
    def warm_clusters(self) -> list[WarmCluster]:
        """Every cluster the lane holds up: warm ones, and expired ones not yet torn down."""
        return [*self._state.warm, *self._state.downing]

    @workflow.signal(name=SIGNAL_CANCEL_ALL)
    def cancel_all(self, order: CancelAll) -> None:
        self._inbox.append(order)

    @workflow.query(name=QUERY_MEMBERS)
    def members(self) -> Members:
        state = self._state
        return Members(
            [ticket.run_id for ticket in state.holders],
            [ticket.run_id for ticket in state.waiting],
        )

    @workflow.run
    async def run(self, state: CoordinatorState) -> None:
        self._state = state
        for cluster in state.downing:  # their teardown began before a continue-as-new
            self._down_apart(cluster)
        while True:
            busy = bool(state.holders or state.waiting)
            timeout = timedelta(seconds=state.check_every_s) if busy else IDLE
            expiry = self._next_expiry()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox),
                    timeout=timeout if expiry is None else min(timeout, expiry),
                )
            except TimeoutError:
                if state.warm:
                    await self._expire()
                elif not busy and not state.downing:
                    await workflow.wait_condition(lambda: not self._charges)
                    if not self._inbox:  # nothing arrived while the charges finished
                        return
                if busy:
                    await self._forget_closed()
            while self._inbox:
                await self._handle(self._inbox.pop(0))
            await self._admit()
            if not state.newest_wins and workflow.patched(PATCH_POSITIONS):
                while await self._tell_places():  # someone vanished: the line moved up
                    await self._admit()
            if (
                workflow.info().is_continue_as_new_suggested()
                or workflow.info().get_current_history_length() > MAX_HISTORY
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                await workflow.wait_condition(lambda: not self._charges)
                if not self._inbox:
                    workflow.continue_as_new(state)

    async def _handle(self, item: Ticket | CancelAll | Left | Handover) -> None:
        state = self._state
        if isinstance(item, Handover):
            if item.history is not None:
                state.history = item.history
            self._keep(item.clusters)
            names = {cluster.name for cluster in item.clusters}
            for leased in state.leased:  # handed back: no longer the holder's to account for
                leased.clusters = [c for c in leased.clusters if c.name not in names]
        elif isinstance(item, Left):
            self._forget(item.execution, item.taken)
        elif isinstance(item, CancelAll):
            if item.requested_at >= state.newest_at:
                state.newest_at, state.stale = item.requested_at, item.reason
            await self._supersede(self._members(), item.reason)
            state.waiting = []
        elif item.execution in state.left or any(
            item.execution == member.execution for member in self._members()
        ):
            return  # a retried enter, or one that arrived after its run had left
        elif not state.newest_wins and item.requested_at < state.newest_at and state.stale:
            # A pool told to cancel everything (a lane's sweeps): a request from before the
            # order is cancelled too, however late it enters.
            await self._supersede([item], state.stale)
        elif not state.newest_wins:
            if item.capacity > 0 and item.requested_at >= state.capacity_at:
                state.capacity, state.capacity_at = item.capacity, item.requested_at
            bisect.insort(state.waiting, item, key=lambda ticket: ticket.requested_at)
        elif item.requested_at < state.newest_at:
            await self._supersede([item], state.stale)
        else:
            state.newest_at, state.stale = item.requested_at, STALE.format(run_id=item.run_id)
            await self._supersede(self._members(), SUPERSEDED.format(run_id=item.run_id))
            state.waiting = [item]

    def _members(self) -> list[Ticket]:
        return self._state.holders + self._state.waiting

    def _keep(self, clusters: list[WarmCluster]) -> None:
        names = {cluster.name for cluster in clusters}
        self._state.warm = [c for c in self._state.warm if c.name not in names] + clusters

    def _forget(self, execution: str, taken: list[str] | None = None) -> None:
        """`execution` is gone. Of the warm clusters it was leased, those it did not take come
        back (all of them when it vanished without leaving: they are downed when due)."""
        state = self._state
        for leased in [lease for lease in state.leased if lease.execution == execution]:
            state.leased.remove(leased)
            kept = {cluster.name for cluster in state.warm}
            self._keep(
                [c for c in leased.clusters if c.name not in (taken or []) and c.name not in kept]
            )

        def others(tickets: list[Ticket]) -> list[Ticket]:
            return [ticket for ticket in tickets if ticket.execution != execution]

        state.holders = others(state.holders)
        state.waiting = others(state.waiting)
        state.superseded = others(state.superseded)
        if execution not in state.left:
            state.left = [*state.left, execution][-REMEMBERED:]

    async def _supersede(self, members: list[Ticket], reason: str) -> None:
        """Tell each run why, then cancel it; it leaves by itself once torn down."""
        state = self._state
        told = {ticket.execution for ticket in state.superseded}
        todo = [ticket for ticket in members if ticket.execution not in told]
        state.superseded += todo
        await asyncio.gather(*(self._cancel(ticket, reason) for ticket in todo))

    async def _cancel(self, ticket: Ticket, reason: str) -> None:
        handle = workflow.get_external_workflow_handle(ticket.run_id, run_id=ticket.execution)
        try:
            await handle.signal(SIGNAL_NOTICE, Notice(reason))
            await handle.cancel()
        except FailureError:
            self._forget(ticket.execution)  # it has closed already

    async def _admit(self) -> None:
        state = self._state
        while len(state.holders) < max(state.capacity, 1) and state.waiting:
            ticket = state.waiting.pop(0)
            state.holders.append(ticket)
            handle = workflow.get_external_workflow_handle(ticket.run_id, run_id=ticket.execution)
            warm, state.warm = state.warm, []
            if warm and workflow.patched(PATCH_WARM_UPKEEP):
                for cluster in warm:
                    self._apart(self._charges, self._charge(cluster))
                # Warm from now on again if it comes back: the run pays while it holds it.
                now = workflow.now().isoformat()
                warm = [replace(cluster, since=now) for cluster in warm]
            if warm:
                state.leased.append(Leased(ticket.execution, warm))
            try:
                if warm or (state.history and state.newest_wins):
                    # A lane's warm clusters belong to the run it admits; its timings help.
                    await handle.signal(SIGNAL_LEASE, Lease(warm, state.history))
                await handle.signal(SIGNAL_ADMITTED, workflow.info().workflow_id)
            except FailureError:
                self._forget(ticket.execution)  # its lease comes back

    # -- warm clusters (issue 12) ----------------------------------------------------------

    def _next_expiry(self) -> timedelta | None:
        """How long until the first warm cluster's time ends (None: none is warm)."""
        if not self._state.warm:
            return None
        first = min(datetime.fromisoformat(cluster.until) for cluster in self._state.warm)
        return max(first - workflow.now(), timedelta(seconds=1))

    async def _expire(self) -> None:
        """Tear down the warm clusters whose time ended (nobody took them)."""
        now = workflow.now()
        ended = [c for c in self._state.warm if datetime.fromisoformat(c.until) <= now]
        self._state.warm = [c for c in self._state.warm if c not in ended]
        if not workflow.patched(PATCH_WARM_UPKEEP):
            await asyncio.gather(*(self._down(cluster) for cluster in ended))
            return
        self._state.downing += ended
        for cluster in ended:
            self._down_apart(cluster)

    def _down_apart(self, cluster: WarmCluster) -> None:
        """Tear `cluster` down while the loop goes on admitting runs (a teardown may wait hours
        for its worker); its warm time is charged once it is down."""

        async def down() -> None:
            await self._down(cluster)
            # Charged before it leaves `downing`: a continue-as-new meanwhile downs and charges
            # it again, which the ledger counts once (by cluster and warm spell).
            await self._charge(cluster)
            self._state.downing = [c for c in self._state.downing if c.name != cluster.name]

        self._apart(self._downs, down())

    @staticmethod
    def _apart(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _charge(self, cluster: WarmCluster) -> None:
        """Add what `cluster` cost while warm, since `since`, to its repository's month."""
        if cluster.hourly_usd is None or not cluster.repo or not cluster.since:
            return
        now = workflow.now()
        hours = max((now - datetime.fromisoformat(cluster.since)).total_seconds(), 0) / 3600
        key = WARM_COST_KEY.format(name=cluster.name, since=cluster.since)
        try:
            await workflow.execute_activity_method(
                LedgerActivities.record_cost,
                RecordInput(
                    cluster.repo,
                    month_of(now.isoformat()),
                    workflow.info().task_queue,
                    CostRecord(key, round(cluster.hourly_usd * hours, 6)),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=LEDGER_RETRY,
            )
        except ActivityError:
            # A lost record only lets a later run spend more; the lane goes on.
            workflow.logger.warning("could not charge warm cluster %s", cluster.name)

    async def _down(self, cluster: WarmCluster) -> None:
        try:
            await workflow.execute_activity(
                DOWN_WARM,
                WarmDown(cluster.run_id, [cluster.name]),
                task_queue=cluster.queue,
                start_to_close_timeout=timedelta(minutes=20),
                schedule_to_close_timeout=WARM_DOWN_GIVES_UP,
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=COORDINATION_RETRY,
            )
        except ActivityError:
            # Its worker never came back within hours: the cluster's own autostop with down
            # (SkyPilot) or the worker's reaper at its start (local) removes it.
            workflow.logger.warning("could not tear down warm cluster %s", cluster.name)

    async def _tell_places(self) -> bool:
        """Signal each waiting run whose place in line (or the one ahead) changed; True when
        one of them turned out to be gone (so the places changed again)."""
        state = self._state
        me = workflow.info().workflow_id
        capacity = max(state.capacity, 1)
        todo: list[tuple[Ticket, Position]] = []
        for index, ticket in enumerate(state.waiting):
            ahead = state.waiting[index - 1] if index else None
            label = (ahead.label or ahead.run_id) if ahead is not None else ""
            place = (index + 1, label, capacity)
            if self._told.get(ticket.execution) != place:
                self._told[ticket.execution] = place
                todo.append((ticket, Position(me, index + 1, label, capacity)))
        waiting = {ticket.execution for ticket in state.waiting}
        self._told = {key: told for key, told in self._told.items() if key in waiting}
        before = len(state.waiting)
        await asyncio.gather(*(self._tell(ticket, place) for ticket, place in todo))
        return len(state.waiting) != before

    async def _tell(self, ticket: Ticket, place: Position) -> None:
        handle = workflow.get_external_workflow_handle(ticket.run_id, run_id=ticket.execution)
        try:
            await handle.signal(SIGNAL_POSITION, place)
        except FailureError:
            self._forget(ticket.execution)  # it vanished while waiting (terminated)

    async def _forget_closed(self) -> None:
        closed = await workflow.execute_activity(
            CLOSED_RUNS,
            ClosedRunsInput([*self._members(), *self._state.superseded]),
            result_type=ClosedRunsOutput,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=COORDINATION_RETRY,
        )
        for execution in closed.executions:
            self._forget(execution)


ENTER = "coordinator_enter"
CLOSED_RUNS = "coordinator_closed_runs"


class CoordinatorActivities:
    """What coordinators and their runs need from a Temporal client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name=ENTER)
    async def enter(self, data: EnterInput) -> None:
        """Signal-with-start the coordinator; a repeat of the same ticket is ignored."""
        await self.client.start_workflow(
            COORDINATOR_WORKFLOW,
            data.state,
            id=data.workflow_id,
            task_queue=data.task_queue,
            start_signal=SIGNAL_ENTER,
            start_signal_args=[data.ticket],
        )

    @activity.defn(name=CLOSED_RUNS)
    async def closed_runs(self, data: ClosedRunsInput) -> ClosedRunsOutput:
        """The members that are no longer running (describe, which is not eventually consistent)."""
        closed = []
        for member in data.members:
            handle = self.client.get_workflow_handle(member.run_id, run_id=member.execution)
            try:
                desc = await handle.describe()
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                closed.append(member.execution)
                continue
            if desc.status is not WorkflowExecutionStatus.RUNNING:
                closed.append(member.execution)
        return ClosedRunsOutput(closed)
