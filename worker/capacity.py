"""Concurrency caps with a visible queue: which capacity pools a run enters, and how its place in
line reads on every surface.

Two caps, each a capacity pool (a `SkyrunCoordinator` in first-come-first-served mode, see
worker/coordinator.py; no visibility query decides who goes next):

- the **repository** pool, `concurrency: N` in `.skyrun.yaml` (read at the run's commit), and
- the **deployment** pool, `SKYRUN_MAX_CONCURRENT_RUNS` (read by the worker that prepared it).

A run enters them after its lane admitted it and after `prepare_run` read the pipeline, before
anything is launched, and leaves them (with its lane) after its teardown. A free slot goes to the
run that reaches the pool; while a pool is full, runs wait in state `queued` in the order their
requests reached a front door (`requested_at`, whatever order they reach the pool in), and the
coordinator signals each its place in line whenever that changes.

**Order, and why it cannot deadlock or starve.** Every run takes its slots in one order: lane,
then repository, then deployment, and gives them all back only after its teardown. A deadlock
needs a cycle of runs, each holding a slot another waits for; with one global order a run only
ever waits for a pool later in that order than every pool it holds, so the run holding a slot of
the last pool it needs (the deployment pool, or the repository pool when the deployment has no
cap) waits for nothing: it computes, and its `timeout_minutes` bounds how long. A run may hold its
repository slot while it waits in the deployment queue; nobody it keeps out could go instead:
the runs of its repository behind it were requested after it (a pool admits in request order),
and every other repository's runs compete with it in the deployment queue in request order too.
A request that waits is never overtaken by a later one in any queue, and only finitely many
requests are older than it, so every queued run computes in the end. Runs that finish, are
cancelled, superseded in their lane or vanish (terminated: noticed by the coordinator's periodic
check, or when a signal to them fails) leave every queue they were in.

**Caps that differ between runs.** The pipeline file may say `concurrency: 1` at one commit and
`3` at another, and workers may be configured differently: the pool takes the capacity of the
newest request (latest `requested_at`) that entered it, whatever order runs arrive in. Holders
beyond a lowered cap finish; no one is admitted until the pool is under it again. A run whose
pipeline says `concurrency: 0` (no limit) does not enter the repository pool and is not counted.
"""

from __future__ import annotations

from worker.contract import RunProgress

DEPLOYMENT_POOL = "deployment"
POOL_REPOSITORY = "repository"
POOL_DEPLOYMENT = "deployment"

# How a queued run's place reads (PR comment, check run, Slack, run page, CLI).
PLACE_BEHIND = "{ordinal} in line, behind {ahead}"
PLACE_NEXT = "next in line"
WHY_REPOSITORY = "{repo} runs at most {capacity} at once (`concurrency` in .skyrun.yaml)"
WHY_DEPLOYMENT = "this skyrun runs at most {capacity} at once (SKYRUN_MAX_CONCURRENT_RUNS)"
QUEUED_LINE = "⏳ Queued: {place}. {why}."
QUEUED_TITLE = "Queued: {place}"
WAITING = "waiting for a free slot"


def repository_pool(repo: str) -> str:
    """The key of a repository's capacity pool (its coordinator id is derived from it)."""
    return f"repo:{repo}"


def run_label(repo: str, pr_number: int | None, run_id: str) -> str:
    """How a run is named to the runs behind it: `acme/models#41` for a pull request's run,
    else its run id."""
    return f"{repo}#{pr_number}" if pr_number is not None else run_id


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def place(position: int | None, ahead: str) -> str:
    """`2nd in line, behind acme/models#41`, or `next in line` ("" when not queued)."""
    if position is None:
        return ""
    if position <= 1 or not ahead:
        return PLACE_NEXT if position <= 1 else f"{ordinal(position)} in line"
    return PLACE_BEHIND.format(ordinal=ordinal(position), ahead=ahead)


def why(progress: RunProgress) -> str:
    """Which cap the run waits for, in words ("" when not queued)."""
    if progress.queue_position is None:
        return ""
    if progress.queue_pool == POOL_REPOSITORY:
        return WHY_REPOSITORY.format(repo=progress.repo, capacity=progress.queue_capacity)
    if progress.queue_pool == POOL_DEPLOYMENT:
        return WHY_DEPLOYMENT.format(capacity=progress.queue_capacity)
    return WAITING


def queued_line(progress: RunProgress) -> str:
    """One line for a queued run: `⏳ Queued: 2nd in line, behind acme/models#41. acme/models
    runs at most 1 at once (...)`; "" when the run is not waiting in a queue."""
    if progress.queue_position is None:
        return ""
    return QUEUED_LINE.format(
        place=place(progress.queue_position, progress.queue_ahead), why=why(progress)
    )


def queued_title(progress: RunProgress) -> str:
    """A short title (check run) for a queued run; "" when it is not waiting in a queue."""
    if progress.queue_position is None:
        return ""
    return QUEUED_TITLE.format(place=place(progress.queue_position, progress.queue_ahead))
