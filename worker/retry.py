"""Retry from the failed stage: which stages of a finished run are reused, which run again and
why, and the request of the retry (pure; RunControl.retry starts it).

A stage that did not succeed runs again (failed, cancelled, timed out, or never started). A
stage that succeeded is reused (its result, metrics, report and log link carried over) unless it
shares its `cluster:` with a stage that runs again: its outputs may have lived only on that
cluster, which was torn down with the run, so it runs again too. Data in `DATA_BUCKET_URL` (a
cloud bucket, or the local backend's lane bucket) outlives the run and is what reused stages
hand over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field

from worker.contract import (
    DEFAULT_BRANCH,
    RunProgress,
    RunRequest,
    RunState,
    StageProgress,
    StageState,
    Verdict,
    lane_for_branch,
)

R_FAILED = "it failed"
R_TIMED_OUT = "it timed out"
R_CANCELLED = "it was cancelled"
R_NOT_RUN = "it did not run"
R_SHARES_CLUSTER = "shares cluster {cluster} with {stage}, which {what}"
WHAT_FAILED = "failed"
WHAT_CANCELLED = "was cancelled"
WHAT_NOT_RUN = "did not run"
WHAT_TIMED_OUT = "timed out"

REUSED_NOTE = "reused from {run_id}"
RERUN_NOTE = "runs again: {reason}"

E_NOT_FOUND = (
    "run {run_id} was not found (it may have expired from Temporal's retention); "
    "start a new run instead"
)
E_STILL_RUNNING = (
    "run {run_id} is still {state}; wait for it to finish (or cancel it), then retry it"
)
E_SUCCEEDED = "run {run_id} succeeded: every stage passed, so there is nothing to retry"
E_ONLY_GATES = (
    "every stage of run {run_id} succeeded and only its gates failed ({gates}): a retry would "
    "run nothing. Start a new run (`/skyrun`, or `skyrun run`) after changing the code or gates"
)
E_NOTHING = (
    "run {run_id} ended {state} before any stage ran ({error}); there is no failed stage to "
    "retry from. Fix the cause and start a new run"
)
E_NOT_A_RUN = "{run_id} is not a skyrun run"
ALREADY_RETRIED = "run {run_id} was already retried as {retry_id}"

RETRY_SUFFIX = re.compile(r"-retry(\d*)$")
MAX_RUN_ID = 200


class RetryRefused(ValueError):
    """The run cannot be retried; the message says why and what to do instead."""


@dataclass
class RetryPlan:
    reused: list[StageProgress] = field(default_factory=list)
    """The stages carried over, each marked `reused_from` the run retried."""
    rerun: list[str] = field(default_factory=list)
    """The stages that run again, in pipeline order."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each of `rerun` runs again."""


def retry_run_id(run_id: str) -> str:
    """The id of the retry of `run_id`: the same run retried twice is one retry (exactly once).

    `x` → `x-retry`, `x-retry` → `x-retry2`, `x-retry2` → `x-retry3`; an id that would grow past
    Temporal's comfortable length is hashed instead.
    """
    match = RETRY_SUFFIX.search(run_id)
    if match:
        number = int(match.group(1) or "1") + 1
        candidate = f"{run_id[: match.start()]}-retry{number}"
    else:
        candidate = f"{run_id}-retry"
    if len(candidate) <= MAX_RUN_ID:
        return candidate
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return f"{run_id[: MAX_RUN_ID - 19]}-retry-{digest}"


def _what(stage: StageProgress, timed_out: bool) -> tuple[str, str]:
    """(own reason, "which ..." words) for a stage that did not succeed."""
    if stage.state is StageState.FAILED:
        return (R_TIMED_OUT, WHAT_TIMED_OUT) if timed_out else (R_FAILED, WHAT_FAILED)
    if stage.state is StageState.CANCELLED:
        return R_CANCELLED, WHAT_CANCELLED
    return R_NOT_RUN, WHAT_NOT_RUN


def refusal(progress: RunProgress | None, run_id: str) -> str:
    """Why the run cannot be retried, or "" when it can."""
    if progress is None:
        return E_NOT_FOUND.format(run_id=run_id)
    if not progress.state.finished:
        return E_STILL_RUNNING.format(run_id=run_id, state=progress.state.value)
    if progress.state is RunState.SUCCEEDED:
        if progress.verdict is Verdict.FAILED:
            gates = ", ".join(f"`{gate.expr}`" for gate in progress.failed_gates)
            return E_ONLY_GATES.format(run_id=run_id, gates=gates)
        return E_SUCCEEDED.format(run_id=run_id)
    never_ran = all(
        stage.state in (StageState.PENDING, StageState.SKIPPED) for stage in progress.stages
    )
    if not progress.stages or (never_ran and progress.state is not RunState.CANCELLED):
        return E_NOTHING.format(
            run_id=run_id,
            state=progress.state.value,
            error=(progress.error or "no stage").rstrip("."),
        )
    return ""


def plan_retry(progress: RunProgress) -> RetryPlan:
    """Which stages of a finished run to reuse and which to run again (in pipeline order)."""
    timed_out = progress.state is RunState.TIMED_OUT
    reasons: dict[str, str] = {}
    first_bad: dict[str, tuple[str, str]] = {}
    """cluster → (the first stage on it that did not succeed, which ...)."""
    for stage in progress.stages:
        if stage.state is StageState.SUCCEEDED:
            continue
        reason, what = _what(stage, timed_out)
        reasons[stage.name] = reason
        first_bad.setdefault(stage.cluster, (stage.name, what))
    for stage in progress.stages:
        if stage.state is StageState.SUCCEEDED and stage.cluster in first_bad:
            other, what = first_bad[stage.cluster]
            reasons[stage.name] = R_SHARES_CLUSTER.format(
                cluster=stage.cluster, stage=other, what=what
            )
    plan = RetryPlan(reasons=reasons)
    for stage in progress.stages:
        if stage.name in reasons:
            plan.rerun.append(stage.name)
        else:
            plan.reused.append(
                dataclasses.replace(
                    stage,
                    reused_from=stage.reused_from or progress.run_id,
                    rerun_reason="",
                    metrics=dict(stage.metrics),
                    log_tail=list(stage.log_tail),
                )
            )
    return plan


def retry_request(
    original: RunRequest, progress: RunProgress, plan: RetryPlan, **changes: object
) -> RunRequest:
    """The retry of `progress`'s run: its commit, ref, lane, values and stages, asked anew.

    `changes` override who asks and where it reports (trigger, requested_by, github, slack, …).
    """
    lane = original.lane
    if progress.ref and lane == lane_for_branch(original.repo, DEFAULT_BRANCH):
        lane = lane_for_branch(original.repo, progress.ref)  # the branch the run learned
    request = dataclasses.replace(
        original,
        ref=progress.ref or original.ref,
        commit=progress.commit or original.commit,
        stages=[stage.name for stage in progress.stages],
        envs=dict(original.envs),
        lane=lane,
        delivery_id="",
        requested_at=0,
        supersedes=[],
        check_push_filter=False,
        check_pr_filter=False,
        retry_of=progress.run_id,
        data_key=original.data_key or progress.run_id,
        reused=plan.reused,
        retry_reasons=dict(plan.reasons),
        # A sweep's run retried is a run of its own: it reports itself, the sweep is over.
        sweep=None,
    )
    return dataclasses.replace(request, **changes)  # type: ignore[arg-type]


def planned_request(request: RunRequest) -> RunRequest:
    """What the retry plans and executes: its stages without the reused ones."""
    if not request.reused:
        return request
    reused = {stage.name for stage in request.reused}
    return dataclasses.replace(
        request, stages=[name for name in request.stages if name not in reused]
    )


def stage_list(request: RunRequest, planned: list[StageProgress]) -> list[StageProgress]:
    """Every stage of a retry in pipeline order: the reused ones as they were, the others new."""
    if not request.reused:
        return planned
    reused = {stage.name: stage for stage in request.reused}
    fresh = iter(planned)
    stages = []
    for name in request.stages:
        stage = reused.get(name) or next(fresh)
        if stage.name not in reused:
            stage.rerun_reason = request.retry_reasons.get(stage.name, "")
        stages.append(stage)
    stages.extend(fresh)
    return stages


def stage_note(stage: StageProgress) -> str:
    """What every surface says of a stage in a retry: "reused from X" or "runs again: why"."""
    if stage.reused_from:
        return REUSED_NOTE.format(run_id=stage.reused_from)
    if stage.rerun_reason:
        return RERUN_NOTE.format(reason=stage.rerun_reason)
    return ""
