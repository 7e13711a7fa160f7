"""What the run pages, their JSON and the log route say to users."""

from __future__ import annotations

from worker.contract import Trigger, Verdict

UNKNOWN_RUN = "No run with id {run_id} on this server."
UNKNOWN_RUN_HINT = (
    "Runs are kept as long as Temporal's retention allows; a run started by another skyrun "
    "deployment (another task queue) is not listed here either."
)
UNKNOWN_LOG = "no log for stage {stage} of run {run_id} (the stage has not written one yet)"
PAGES_OFF = "run pages are turned off on this server (SKYRUN_RUN_PAGES=false)"
BAD_PR = "pr must be a number, not {value!r}"
BAD_CHOICE = "unknown {name} {value!r}; use one of: {choices}"
DETAILS_UNAVAILABLE = (
    "No worker answered for this run's details ({reason}), so this shows only what Temporal's "
    "run list knows. Start a worker (skyrun worker, or skyrun dev) to see stages and logs."
)
QUERY_FAILED = "its progress query failed"
QUERY_TIMED_OUT = "no answer in time"
TEMPORAL_DOWN = (
    "Temporal is not reachable ({error}); runs and their progress come from it. "
    "Check TEMPORAL_ADDRESS, or run: skyrun check"
)
TRIGGER_LABELS = {
    Trigger.PUSH.value: "push",
    Trigger.COMMENT.value: "PR comment",
    Trigger.PULL_REQUEST.value: "pull request",
    Trigger.SLACK.value: "Slack",
    Trigger.CLI.value: "CLI",
    Trigger.MERGE_GROUP.value: "merge queue",
}
VERDICT_LABELS = {
    Verdict.PASSED.value: "gates passed",
    Verdict.FAILED.value: "gate failed",
    Verdict.NONE.value: "no gates",
}
