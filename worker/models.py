"""Inputs and outputs of the worker's activities: one dataclass in and one out for each."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.contract import RunRequest


@dataclass
class PlannedStage:
    name: str
    cluster: str
    cluster_name: str
    task_file: str
    task_yaml: str
    envs: dict[str, str]
    launch: bool
    down_after: list[str] = field(default_factory=list)
    """Backend cluster names no later stage needs: downed as soon as this stage ends."""


@dataclass
class MetricPatternModel:
    name: str
    pattern: str


@dataclass
class PrepareInput:
    run_id: str
    request: RunRequest


@dataclass
class PrepareOutput:
    commit: str
    worker_queue: str
    stages: list[PlannedStage]
    metric_patterns: list[MetricPatternModel]
    autostop_minutes: int
    timeout_minutes: int
    notify_slack: str = ""
    skip_reason: str = ""
    """Non-empty when the run has nothing to do (a push to a branch the pipeline does not watch)."""
    backend: str = ""
    dashboard_url: str = ""


@dataclass
class StageInput:
    run_id: str
    request: RunRequest
    commit: str
    stage: PlannedStage
    metric_patterns: list[MetricPatternModel]
    autostop_minutes: int


@dataclass
class StageOutput:
    exit_code: int
    metrics: dict[str, float]
    report: str
    log_tail: list[str]
    duration_s: float


@dataclass
class DownInput:
    run_id: str
    cluster_names: list[str]


@dataclass
class LaneInput:
    run_ids: list[str]


@dataclass
class CleanupInput:
    run_id: str
