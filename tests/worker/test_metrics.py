"""Worker-side metrics: stage durations and reporting errors (served by worker/probes.py)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from worker.backends.base import EXIT_CANCELLED
from worker.metrics import counting_reporting_errors, observe_stage


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_stage_durations_and_reporting_errors_are_counted_by_the_worker() -> None:
    labels = {"stage": "train", "outcome": "failed"}
    count = sample("skyrun_stage_duration_seconds_count", **labels)
    total = sample("skyrun_stage_duration_seconds_sum", **labels)
    observe_stage("train", 3, 12.5)
    assert sample("skyrun_stage_duration_seconds_count", **labels) == count + 1
    assert sample("skyrun_stage_duration_seconds_sum", **labels) == total + 12.5
    cancelled = sample("skyrun_stage_duration_seconds_count", stage="train", outcome="cancelled")
    observe_stage("train", EXIT_CANCELLED, 1.0)
    assert (
        sample("skyrun_stage_duration_seconds_count", stage="train", outcome="cancelled")
        == cancelled + 1
    )

    errors = sample("skyrun_reporting_errors_total", reporter="github")
    with counting_reporting_errors("github"):
        pass
    with pytest.raises(RuntimeError), counting_reporting_errors("github"):
        raise RuntimeError("GitHub is down")
    assert sample("skyrun_reporting_errors_total", reporter="github") == errors + 1
