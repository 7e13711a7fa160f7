"""What a run page, a runs-list row and their JSON show, built from progress without I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from bot.pages.texts import TRIGGER_LABELS, VERDICT_LABELS
from worker.baseline import Baseline
from worker.capacity import queued_line
from worker.contract import RunProgress, RunState, StageProgress, StageState, Trigger, Verdict
from worker.costview import (
    cluster_line,
    estimate_line,
    estimate_text,
    format_usd,
    over_budget_text,
)
from worker.formatting import parse_time, stage_flow
from worker.gates import failure_summary
from worker.links import GitHubHost, Links, repo_problem
from worker.runcontrol import RunSummary

HEADLINE_METRICS = 3
"""Metrics a row of the runs list shows."""


def elapsed_s(
    started: str | datetime | None, finished: str | datetime | None, now: datetime
) -> float | None:
    """Seconds from start to finish, or to `now` while not finished; None before it started."""
    start = parse_time(started) if isinstance(started, str) else started
    end = parse_time(finished) if isinstance(finished, str) else finished
    if start is None:
        return None
    return max(0.0, ((end or now) - start).total_seconds())


def iso_time(value: str | datetime | None) -> str:
    when = parse_time(value) if isinstance(value, str) else value
    return when.isoformat() if when else ""


def repo_name(repo: str) -> str:
    """`owner/name` as is; for a URL or local path, its last part (the full text is a tooltip)."""
    if repo_problem(repo) is None:
        return repo
    return repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or repo


def trigger_label(trigger: str) -> str:
    return TRIGGER_LABELS.get(trigger, trigger)


@dataclass
class RunLinks:
    page: str
    api: str
    temporal: str
    dashboard: str = ""
    repo: str = ""
    commit: str = ""
    pr: str = ""
    ref: str = ""


def run_links(progress: RunProgress, links: Links, github: GitHubHost) -> RunLinks:
    """The run's own URLs and, for a GitHub repository (`owner/name`), its forge pages."""
    out = RunLinks(
        page=links.run(progress.run_id),
        api=links.api(progress.run_id),
        temporal=links.temporal(progress.run_id),
        dashboard=progress.dashboard_url,
    )
    if repo_problem(progress.repo) is None:
        out.repo = github.repo_url(progress.repo)
        if progress.commit:
            out.commit = f"{out.repo}/commit/{quote(progress.commit, safe='')}"
        if progress.pr_number is not None:
            out.pr = f"{out.repo}/pull/{progress.pr_number}"
        if progress.ref:
            out.ref = f"{out.repo}/tree/{quote(progress.ref, safe='/')}"
    return out


@dataclass
class MetricView:
    name: str
    value: float
    base: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.base is None else self.value - self.base


@dataclass
class StageView:
    stage: StageProgress
    duration_s: float | None
    tail: list[str]
    log_url: str
    live: bool


# --- stages as a DAG: the timeline (issue 12) ----------------------------------------------


@dataclass
class TimelinePart:
    """A piece of a stage's bar: `provision` (its cluster launched ahead of time), `launch`
    (launching in the stage's own step), `setup` (the task's setup, where the backend says when
    it began; otherwise part of the launch), `ready` (the cluster idle, waiting for the stage's
    needs) or `job`; in percent of the run's span."""

    kind: str
    left: float
    width: float
    seconds: float


@dataclass
class TimelineBar:
    """One stage on the run's timeline: where its bar starts and how wide it is, in percent of
    the run's span (from the run's start to its end, or to now while it runs)."""

    name: str
    state: str
    left: float
    width: float
    needs: list[str]
    running: bool = False
    parts: list[TimelinePart] = dataclasses.field(default_factory=list)


MIN_BAR_PERCENT = 0.6
"""A stage of a few milliseconds still shows as a sliver."""
PART_TITLES = {
    "provision": "provisioning ahead of time",
    "setup": "setup",
    "ready": "cluster ready, waiting for its needs",
    "launch": "launching (with its setup, unless drawn apart)",
    "job": "job",
}


def timeline(progress: RunProgress, now: datetime) -> list[TimelineBar]:
    """A bar per stage that started, placed by its started_at / finished_at over the run's span;
    a prelaunched cluster's provisioning is part of its stage's bar, ahead of the job."""
    start = parse_time(progress.started_at)
    starts = [parse_time(s.provision_started_at or s.started_at) for s in progress.stages]
    known = [when for when in starts if when is not None]
    if not known:
        return []
    start = min([start, *known]) if start else min(known)
    ends = [parse_time(s.finished_at) for s in progress.stages]
    end = parse_time(progress.finished_at) or now
    end = max([end, *(when for when in ends if when is not None)])
    span = max((end - start).total_seconds(), 1e-3)

    def place(began: datetime, finish: datetime) -> tuple[float, float]:
        left = (began - start).total_seconds() / span * 100
        width = max((finish - began).total_seconds() / span * 100, MIN_BAR_PERCENT)
        left = min(left, 100 - MIN_BAR_PERCENT)
        return round(left, 2), round(min(width, 100 - left), 2)

    needs = progress.stage_needs
    bars = []
    for stage, began, ended in zip(progress.stages, starts, ends, strict=True):
        if began is None:
            continue
        provisioning = stage.state is StageState.PENDING and bool(stage.provision_started_at)
        live = stage.state is StageState.RUNNING or provisioning
        running = live and not progress.state.finished
        provisioned = parse_time(stage.provision_finished_at)
        finish = ended or (now if running else provisioned or began)
        left, width = place(began, finish)
        bar = TimelineBar(stage.name, stage.state.value, left, width, needs[stage.name], running)
        bar.parts = _parts(stage, finish, place)
        bars.append(bar)
    return bars


def _parts(
    stage: StageProgress,
    finish: datetime,
    place: Callable[[datetime, datetime], tuple[float, float]],
) -> list[TimelinePart]:
    """The stage's bar cut where its setup began, its provisioning ended and its job began
    (when known)."""
    marks: list[tuple[str, datetime]] = []
    provision_at = parse_time(stage.provision_started_at)
    provisioned_at = parse_time(stage.provision_finished_at)
    job_at = parse_time(stage.job_started_at)
    if provision_at is not None:
        marks.append(("provision", provision_at))
        if stage.provision_setup_s is not None:
            marks.append(("setup", provision_at + timedelta(seconds=stage.provision_setup_s)))
        if provisioned_at is not None:
            marks.append(("ready", provisioned_at))
    step_at = job_at or parse_time(stage.started_at)
    if step_at is not None and stage.launch_s and stage.launched and not provision_at:
        marks.append(("launch", step_at))
        if stage.setup_s is not None and stage.setup_s < stage.launch_s:
            marks.append(("setup", step_at + timedelta(seconds=stage.setup_s)))
        marks.append(("job", step_at + timedelta(seconds=stage.launch_s)))
    elif step_at is not None:
        marks.append(("job", step_at))
    parts = []
    for (kind, at), following in zip(marks, [*marks[1:], ("", finish)], strict=True):
        until = min(max(following[1], at), finish)
        if until <= at and kind != "job":
            continue
        left, width = place(at, until)
        seconds = round((until - at).total_seconds(), 1)
        parts.append(TimelinePart(kind, left, width, seconds))
    return parts if len(parts) > 1 else []  # just a job: the stage's bar says it all


@dataclass
class RunView:
    run: RunProgress
    live: bool
    duration_s: float | None
    trigger: str
    stages: list[StageView]
    metrics: list[MetricView]
    links: RunLinks
    baseline: Baseline | None = None
    notice: str = ""
    verdict: str = ""
    """The gates' verdict in words ("" when the run has none)."""
    gate_failed: str = ""
    """How the first failed gate reads (`accuracy 0.81 < 0.85`) when it failed the check."""
    timeline: list[TimelineBar] = dataclasses.field(default_factory=list)
    flow: str = ""
    """How the stages run when some run at once (`prep → a ∥ b → join`), else ""."""
    queue: str = ""
    """A queued run's place in line and the cap it waits for ("" unless it waits)."""
    # Cost (issue 14).
    estimate: str = ""
    """`≈ $4.10: train 1x A100 … $3.67/h x ~55 min, from run X` ("" before it is planned)."""
    estimate_lines: list[str] = dataclasses.field(default_factory=list)
    cost: str = ""
    """The run's cost (so far), `$3.95`; "" before a cluster was launched."""
    cluster_lines: list[str] = dataclasses.field(default_factory=list)
    over_budget: str = ""
    """Why the run is reported over its per-run limit ("" while it is not)."""


def gate_failure(progress: RunProgress) -> str:
    """The first failed gate of a run whose stages all succeeded ("" otherwise)."""
    if progress.state is not RunState.SUCCEEDED or progress.verdict is not Verdict.FAILED:
        return ""
    return failure_summary(progress.failed_gates[0]) if progress.failed_gates else ""


@dataclass
class RunRow:
    """One line of the runs list: visibility's summary and, when the run answered, its metrics."""

    summary: RunSummary
    duration_s: float | None
    trigger: str
    live: bool
    metrics: dict[str, float] | None = None
    error: str = ""
    commit: str = ""
    """The resolved commit (visibility only knows it when the trigger named one)."""
    cost_usd: float | None = None
    estimate_usd: float | None = None

    @property
    def headline(self) -> list[tuple[str, float]]:
        return list((self.metrics or {}).items())[:HEADLINE_METRICS]


def headline_metrics(progress: RunProgress) -> dict[str, float]:
    """The run's metrics, those of later stages (evaluation) first."""
    ordered: dict[str, float] = {}
    for stage in reversed(progress.stages):
        for name, value in stage.metrics.items():
            ordered.setdefault(name, value)
    return ordered


def progress_from_summary(summary: RunSummary) -> RunProgress:
    """A stand-in progress when no worker answers: what visibility alone knows."""
    trigger = Trigger(summary.trigger) if summary.trigger in TRIGGER_LABELS else Trigger.CLI
    return RunProgress(
        run_id=summary.run_id,
        repo=summary.repo,
        ref=summary.ref,
        commit=summary.commit,
        trigger=trigger,
        requested_by=summary.requested_by,
        state=summary.state,
        started_at=summary.started_at.isoformat() if summary.started_at else "",
        finished_at=summary.finished_at.isoformat() if summary.finished_at else "",
        pr_number=summary.pr_number,
    )


def build_view(
    progress: RunProgress,
    *,
    links: Links,
    github: GitHubHost,
    now: datetime,
    live_tails: Mapping[str, list[str]],
    baseline: Baseline | None = None,
    notice: str = "",
) -> RunView:
    """Everything a run page shows, computed without I/O."""
    live = not progress.state.finished
    stages = []
    for stage in progress.stages:
        running = live and stage.state is StageState.RUNNING
        duration = (
            stage.duration_s
            if stage.duration_s is not None
            else elapsed_s(stage.started_at, stage.finished_at, now)
        )
        stages.append(
            StageView(
                stage=stage,
                duration_s=duration,
                tail=live_tails.get(stage.name) or stage.log_tail,
                log_url=links.stage_log(progress.run_id, stage),
                live=running,
            )
        )
    base_metrics = baseline.metrics if baseline else {}
    metrics = [
        MetricView(name, value, base_metrics.get(name))
        for name, value in headline_metrics(progress).items()
    ]
    return RunView(
        run=progress,
        live=live,
        duration_s=elapsed_s(progress.started_at, progress.finished_at, now),
        trigger=trigger_label(progress.trigger.value),
        stages=stages,
        metrics=metrics,
        links=run_links(progress, links, github),
        baseline=baseline,
        notice=notice,
        verdict=VERDICT_LABELS[progress.verdict.value] if progress.gates else "",
        gate_failed=gate_failure(progress),
        timeline=timeline(progress, now),
        flow=stage_flow(progress.stage_needs),
        queue=queued_line(progress) if progress.state is RunState.QUEUED else "",
        estimate=estimate_text(progress),
        estimate_lines=[estimate_line(line) for line in progress.estimate],
        cost=format_usd(progress.cost_usd) if progress.clusters else "",
        cluster_lines=[cluster_line(cluster) for cluster in progress.clusters],
        over_budget=over_budget_text(progress),
    )


def build_row(summary: RunSummary, progress: RunProgress | None, now: datetime) -> RunRow:
    """A runs-list row: visibility's summary, with the run's progress when it answered."""
    return RunRow(
        summary=summary,
        duration_s=elapsed_s(summary.started_at, summary.finished_at, now),
        trigger=trigger_label(summary.trigger),
        live=not summary.state.finished,
        metrics=headline_metrics(progress) if progress else None,
        error=progress.error if progress else "",
        commit=(progress.commit if progress else "") or summary.commit,
        cost_usd=progress.cost_usd if progress else None,
        estimate_usd=progress.estimate_usd if progress else None,
    )


def view_json(view: RunView, links: Links) -> dict[str, Any]:
    """GET /api/runs/{run_id}: the progress's fields (DESIGN.md names those scripts rely on),
    and what the page computed from them."""
    data = dataclasses.asdict(view.run)
    data["metrics"] = view.run.metrics
    data["live"] = view.live
    data["duration_s"] = view.duration_s
    data["trigger_label"] = view.trigger
    data["retry_of"] = view.run.retry_of or None  # retry from the failed stage
    for stage, stage_view in zip(data["stages"], view.stages, strict=True):
        stage["reused_from"] = stage_view.stage.reused_from or None
        stage["cluster_reused_from"] = stage_view.stage.cluster_reused_from or None
        stage["rerun_reason"] = stage_view.stage.rerun_reason or None
        stage["log_url"] = stage_view.log_url
        stage["log_tail"] = stage_view.tail
        stage["elapsed_s"] = stage_view.duration_s
    for stage, needs in zip(data["stages"], view.run.stage_needs.values(), strict=True):
        stage["needs"] = needs  # runs before `needs:` ran each stage after the one before
    data["links"] = dataclasses.asdict(view.links)
    data["baseline"] = None
    if view.baseline is not None:
        data["baseline"] = {
            "run_id": view.baseline.run_id,
            "ref": view.baseline.ref,
            "commit": view.baseline.commit,
            "url": links.run(view.baseline.run_id),
            "metrics": view.baseline.metrics,
            "deltas": {m.name: m.delta for m in view.metrics if m.delta is not None},
        }
    data["notice"] = view.notice
    return data


def row_json(row: RunRow, links: Links) -> dict[str, Any]:
    """One run of GET /api/runs."""
    summary = row.summary
    data = dataclasses.asdict(summary)
    data["started_at"] = iso_time(summary.started_at) or None
    data["finished_at"] = iso_time(summary.finished_at) or None
    data["duration_s"] = row.duration_s
    data["live"] = row.live
    data["trigger_label"] = row.trigger
    data["metrics"] = row.metrics
    data["error"] = row.error
    data["commit"] = row.commit
    data["cost_usd"] = row.cost_usd
    data["estimate_usd"] = row.estimate_usd
    data["url"] = links.run(summary.run_id)
    data["api_url"] = links.api(summary.run_id)
    return data
