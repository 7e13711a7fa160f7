"""Worker-side Prometheus metrics: stage durations and reporting errors.

The metrics live in prometheus-client's default registry. In `skyrun dev` the bot serves that
registry at `/metrics`; a standalone `skyrun worker` serves it with its probes
(worker/probes.py, on SKYRUN_WORKER_METRICS_PORT).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import Counter, Histogram

from worker.backends.base import EXIT_CANCELLED, EXIT_SUCCEEDED

# From a quick smoke test to a long training job.
STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
MAX_LABEL = 64
"""Stage and reporter names are user-chosen: cut them so a label stays a label."""

STAGE_DURATION = Histogram(
    "skyrun_stage_duration_seconds",
    "Wall time of a stage's task on its cluster (launch or exec until exit), by stage and outcome.",
    ["stage", "outcome"],
    buckets=STAGE_BUCKETS,
)
REPORTING_ERRORS = Counter(
    "skyrun_reporting_errors",
    "Failed attempts to report a run back (GitHub comment or check, Slack message), by reporter.",
    ["reporter"],
)

INFRA_FAILURES = Counter(
    "skyrun_infra_failures",
    "Stages the infrastructure failed (preempted or lost cluster, no capacity, lost connection), "
    "by cause and whether the stage was relaunched (recovered) or failed (gave_up).",
    ["cause", "outcome"],
)


def observe_infra_failure(cause: str, *, recovered: bool) -> None:
    INFRA_FAILURES.labels(cause, "recovered" if recovered else "gave_up").inc()


def stage_outcome(exit_code: int) -> str:
    if exit_code == EXIT_SUCCEEDED:
        return "succeeded"
    return "cancelled" if exit_code == EXIT_CANCELLED else "failed"


def observe_stage(stage: str, exit_code: int, duration_s: float) -> None:
    """Record one finished stage (called by the `run_stage` activity)."""
    STAGE_DURATION.labels(stage[:MAX_LABEL], stage_outcome(exit_code)).observe(duration_s)


def record_reporting_error(reporter: str) -> None:
    REPORTING_ERRORS.labels(reporter[:MAX_LABEL]).inc()


@contextlib.contextmanager
def counting_reporting_errors(reporter: str) -> Iterator[None]:
    """Count an exception escaping the block as a reporting error of `reporter`, and re-raise."""
    try:
        yield
    except Exception:
        record_reporting_error(reporter)
        raise
