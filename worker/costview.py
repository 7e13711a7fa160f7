"""A run's cost from its clusters' up times, and how estimates and costs are written on every
surface (PR comment, check run, Slack, run page, command line).

Pure and light: the workflow uses the accounting (deterministic: times come from the workflow),
the bot and the reporters the texts. Prices are found in worker/cost.py (the price policy).
"""

from __future__ import annotations

from worker.contract import ClusterCost, RunProgress, StageEstimate, StageProgress, StageState
from worker.formatting import format_duration, parse_time, seconds_between

UNKNOWN = "unknown"
ESTIMATE = "≈ {total}: {lines}"
ESTIMATE_UNKNOWN = "estimate unknown: {lines}"
LINE = "{stage} {resources} {hourly}/h \u00d7 {duration}"
LINE_SHARED = "{stage} on {cluster}'s cluster {hourly}/h \u00d7 {duration}"
LINE_NO_PRICE = "{stage}: price unknown ({note})"
FROM_RUN = "~{duration}, from run {run_id}"
WORST_CASE = "worst case {duration}: no earlier successful run"
COST = "{total}: {clusters}"
OVER_BUDGET = (
    "over budget: {cost} is above this run's limit of {limit} (the lower of budget.max_run_usd "
    "and SKYRUN_APPROVAL_USD); it was not stopped"
)
COST_CLUSTER = "{cluster} {hourly}/h \u00d7 up {up}{detail}"
COST_CLUSTER_NO_PRICE = "{cluster} up {up} (price unknown)"
COST_UP_SO_FAR = " so far"
COST_DETAIL = " ({busy} running, {idle} provisioning/idle/teardown)"
COST_DETAIL_AHEAD = (
    " ({busy} running, {ahead} provisioning ahead, {idle} idle/teardown costing {idle_usd})"
)


def format_usd(value: float | None) -> str:
    """`$4.10`, `<$0.01`, `$0.00`; `unknown` when None."""
    if value is None:
        return UNKNOWN
    if 0 < value < 0.01:
        return "<$0.01"
    return f"${value:,.2f}"


def format_minutes(minutes: float) -> str:
    """`55 min`, `180 min`, `42 s`, `<1 s`: a duration as an estimate speaks of it."""
    seconds = minutes * 60
    if seconds < 1:
        return "<1 s"
    if seconds < 60:
        return f"{round(seconds)} s"
    return f"{round(minutes)} min"


def duration_basis(line: StageEstimate) -> str:
    """Where a stage's estimated duration comes from, e.g. `~55 min, from run X`."""
    duration = format_minutes(line.minutes)
    if line.from_run:
        return FROM_RUN.format(duration=duration, run_id=line.from_run)
    return WORST_CASE.format(duration=duration)


def estimate_line(line: StageEstimate) -> str:
    """`train 1x A100 (lambda gpu_1x_a100) $3.67/h x ~55 min, from run X`."""
    if line.hourly_usd is None:
        return LINE_NO_PRICE.format(stage=line.stage, note=line.note or UNKNOWN)
    hourly = format_usd(line.hourly_usd)
    if line.stage != line.cluster and not line.resources:
        return LINE_SHARED.format(
            stage=line.stage, cluster=line.cluster, hourly=hourly, duration=duration_basis(line)
        )
    return LINE.format(
        stage=line.stage,
        resources=line.resources or line.cluster,
        hourly=hourly,
        duration=duration_basis(line),
    )


def estimate_text(progress: RunProgress) -> str:
    """The run's estimate in one line ("" when it has none, e.g. before it is planned)."""
    if not progress.estimate:
        return ""
    lines = "; ".join(estimate_line(line) for line in progress.estimate)
    if progress.estimate_usd is None:
        return ESTIMATE_UNKNOWN.format(lines=lines)
    return ESTIMATE.format(total=format_usd(progress.estimate_usd), lines=lines)


def total_of(lines: list[StageEstimate]) -> float | None:
    """The sum of the stages' estimates; None when one of them is unknown."""
    if any(line.usd is None for line in lines):
        return None
    return round(sum(line.usd or 0.0 for line in lines), 6)


def up_seconds(cluster: ClusterCost, now: str) -> float:
    """Seconds from its launch start to its teardown (or to `now` while it is up)."""
    return max(0.0, seconds_between(cluster.up_at, cluster.down_at or now) or 0.0)


def cluster_line(cluster: ClusterCost) -> str:
    """`train $3.67/h x up 1 h 04 min (58 min running, 6 min provisioning/idle/teardown)`."""
    up = format_duration(cluster.up_s) + ("" if cluster.down_at else COST_UP_SO_FAR)
    if cluster.hourly_usd is None:
        return COST_CLUSTER_NO_PRICE.format(cluster=cluster.cluster, up=up)
    idle = max(0.0, cluster.up_s - cluster.busy_s)
    detail = COST_DETAIL.format(busy=format_duration(cluster.busy_s), idle=format_duration(idle))
    if cluster.provision_s:
        # Provisioned ahead of its stage: what waiting for the stage's needs cost is shown.
        idle = max(0.0, idle - cluster.provision_s)
        detail = COST_DETAIL_AHEAD.format(
            busy=format_duration(cluster.busy_s),
            ahead=format_duration(cluster.provision_s),
            idle=format_duration(idle),
            idle_usd=format_usd(idle / 3600 * cluster.hourly_usd),
        )
    return COST_CLUSTER.format(
        cluster=cluster.cluster, hourly=format_usd(cluster.hourly_usd), up=up, detail=detail
    )


def cost_text(progress: RunProgress) -> str:
    """What the run cost (so far): `$3.95: train $3.67/h x up 1 h 04 min (…)` ("" before any
    cluster was launched)."""
    if not progress.clusters:
        return ""
    clusters = "; ".join(cluster_line(cluster) for cluster in progress.clusters)
    return COST.format(total=format_usd(progress.cost_usd), clusters=clusters)


def over_budget_text(progress: RunProgress) -> str:
    """Said on every surface once a run costs more than its per-run limit (it is not stopped)."""
    cost, limit = progress.cost_usd, progress.budget_usd
    if limit <= 0 or cost is None or cost <= limit:
        return ""
    return OVER_BUDGET.format(cost=format_usd(cost), limit=format_usd(limit))


def account(progress: RunProgress, now: str) -> None:
    """Set each cluster's, stage's and the run's `cost_usd` from the clusters' up times.

    A cluster costs its hourly price x its time up (launch start to teardown finished, or to
    `now`). Each stage that ran on it pays the price x its own duration; the stage that
    launched it also pays the rest (provisioning, idle time and teardown), so the stages add up
    to the run. Unknown prices make the costs they enter unknown (None).
    """
    if parse_time(now) is None:
        return
    total: float | None = 0.0
    for cluster in progress.clusters:
        cluster.up_s = round(up_seconds(cluster, now), 3)
        hourly = cluster.hourly_usd
        stages = [s for s in progress.stages if s.cluster == cluster.cluster and _ran(s)]
        if hourly is None:
            cluster.cost_usd = None
            total = None
            for stage in stages:
                stage.cost_usd = None
            continue
        cluster.cost_usd = round(hourly * cluster.up_s / 3600, 6)
        if total is not None:
            total += cluster.cost_usd
        own = {s.name: hourly * (s.duration_s or 0.0) / 3600 for s in stages}
        launcher = next((s for s in stages if s.launched), stages[0] if stages else None)
        for stage in stages:
            if stage is launcher:
                others = sum(v for name, v in own.items() if name != stage.name)
                stage.cost_usd = round(max(0.0, cluster.cost_usd - others), 6)
            else:
                stage.cost_usd = round(own[stage.name], 6)
    progress.cost_usd = None if total is None or not progress.clusters else round(total, 6)


def _ran(stage: StageProgress) -> bool:
    return stage.state not in (StageState.PENDING, StageState.SKIPPED)
