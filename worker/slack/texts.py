"""Everything the Slack reporter says, in one place (mrkdwn templates)."""

from __future__ import annotations

from worker.contract import RunState, StageState

RUN_ICONS = {
    RunState.QUEUED: ":hourglass_flowing_sand:",
    RunState.RUNNING: ":arrows_counterclockwise:",
    RunState.SUCCEEDED: ":white_check_mark:",
    RunState.FAILED: ":x:",
    RunState.CANCELLED: ":no_entry_sign:",
    RunState.TIMED_OUT: ":alarm_clock:",
    RunState.SKIPPED: ":fast_forward:",
    RunState.DENIED: ":no_entry:",
    RunState.AWAITING_APPROVAL: ":moneybag:",
}
RUN_WORDS = {
    RunState.QUEUED: "queued",
    RunState.RUNNING: "running",
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.CANCELLED: "cancelled",
    RunState.TIMED_OUT: "timed out",
    RunState.SKIPPED: "skipped",
    RunState.DENIED: "not allowed",
    RunState.AWAITING_APPROVAL: "waiting for budget approval",
}
STAGE_ICONS = {
    StageState.PENDING: ":white_circle:",
    StageState.RUNNING: ":arrows_counterclockwise:",
    StageState.SUCCEEDED: ":white_check_mark:",
    StageState.FAILED: ":x:",
    StageState.CANCELLED: ":no_entry_sign:",
    StageState.SKIPPED: ":fast_forward:",
}
TRIGGER_WORDS = {
    "push": "push",
    "comment": "PR comment",
    "pull_request": "pull request",
    "slack": "Slack",
    "cli": "CLI",
}

TITLE = "{icon} *{what}* — {state}"
FALLBACK = "skyrun {what}: {state}"
CONTEXT_RUN = "run `{run_id}`"
CONTEXT_COMMIT = "commit `{commit}`"
CONTEXT_BY = "{trigger} by {who}"
CONTEXT_PR = "PR #{pr}"
CONTEXT_BACKEND = "backend {backend}"
CONTEXT_TOOK = "took {duration}"
PLANNING = "_Checking out the repository and reading `.skyrun.yaml`…_"
STAGE_LINE = "{icon} `{name}` {detail}"
# Stages as a DAG: how the stages run, when some run at the same time (∥).
STAGE_FLOW = "_Stages: {flow}_"
STAGE_PENDING = "waiting"
STAGE_RUNNING = "running on `{cluster}` since {since}"
STAGE_DONE = "{state} in {duration}"
STAGE_EXIT = " (exit status {code})"
STAGE_RECOVERED = " · {note}"
STAGE_CLUSTER_NOTE = " · {note}"
METRICS_TITLE = "*Metrics*"
METRIC_LINE = "`{name}` *{value}*"
METRIC_CHANGE = " ({change} vs last success)"
METRIC_NEW = " (new)"
BASELINE_NOTE = "Compared with <{url}|{run_id}>, the last successful run of {branch}."
NO_BASELINE = "No earlier successful run of {branch} to compare with."
REPORT_TITLE = "*Report*"
TRUNCATED = "… (truncated; the full report is on the <{url}|run page>)"
ERROR = ":warning: {error}"
NEXT = "*What next:* {hint}"

NEXT_STAGE_FAILED = (
    "read `{stage}`'s log ({log}; its last lines are in the thread), fix the cause, then run "
    "again: {rerun}"
)
NEXT_SETUP_FAILED = (
    "nothing was launched. Fix what the error names (`.skyrun.yaml`, a task file, or access to "
    "the repository), then run again: {rerun}"
)
NEXT_TIMED_OUT = (
    "every cluster was torn down. If the stage needs longer, raise `timeout_minutes` in "
    "`.skyrun.yaml`; then run again: {rerun}"
)
NEXT_CANCELLED = "every cluster was torn down. To run it again: {rerun}"
NEXT_DENIED = "ask someone with write access to the repository to start it."
RERUN_SLACK = "`/skyrun {target}`"
RERUN_PR = "comment `/skyrun` on PR #{pr}"
RERUN_CLI = "`skyrun run {repo}{ref}`"
FULL_LOG = "<{url}|full log>"
THE_LOG = "under SKYRUN_DATA_DIR/logs on the worker"

BUTTON_RUN = "Run page"
BUTTON_LOGS = "Logs"
BUTTON_TEMPORAL = "Temporal UI"
BUTTON_DASHBOARD = "Cluster dashboard"
BUTTON_CANCEL = "Cancel run"
CONFIRM_TITLE = "Cancel this run?"
CONFIRM_TEXT = "Its stages stop and every cluster it launched is torn down."
CONFIRM_YES = "Cancel run"
CONFIRM_NO = "Keep it running"

REPLY_STAGE = "{icon} `{name}` {state} in {duration}{exit}."
REPLY_METRICS = "Metrics: {metrics}"
REPLY_TAIL = "Last lines of its log:\n```{tail}```"
REPLY_LOG = "<{url}|Full log of {name}>"
REPLY_FINAL = "{mention}{icon} Run {state}{took}."

NOT_IN_CHANNEL = (
    ":warning: skyrun cannot post this run's progress in this channel ({error}). Invite the "
    "app (`/invite @skyrun`) or run the command where it is a member. The run goes on: "
    "<{url}|{run_id}>."
)
NOT_IN_CHANNEL_LOG = (
    "cannot post to Slack channel %s (%s): invite the skyrun app there; reporting of run %s "
    "to Slack stops"
)

# Quality gates (`gates:` in .skyrun.yaml).
GATES_TITLE = "*Gates*"
GATE_PASSED_LINE = ":white_check_mark: `{expr}` passed: {detail}"
GATE_FAILED_LINE = ":x: `{expr}` failed: {detail}"
GATE_DETAIL = "{value} vs {threshold}"
GATE_NOTE = " ({note})"
GATES_FAILED_WORDS = "succeeded, but a gate failed"
GATES_FAILED = ":x: Gate failed: {summary}."
NEXT_GATES_FAILED = (
    "the stages succeeded but the metrics do not meet the `gates:` in `.skyrun.yaml`; improve "
    "the result, then run again: {rerun}"
)

# Retry from the failed stage (worker/retry.py).
BUTTON_RETRY = "Retry"
RETRY_HINT = (
    ":recycle: Or retry from the failed stage (same commit and values; the stages that "
    "succeeded are reused): the *Retry* button, or `/skyrun retry {run_id}`."
)
CONTEXT_RETRY = "retry of <{url}|{run_id}>"
STAGE_REUSED = "reused from <{url}|{run_id}>"
STAGE_RERUN = " · runs again: {reason}"
RETRY_TITLE = ":recycle: *Retry of <{url}|{run_id}>*"
RETRY_REUSED = "Reused (not run again; result, metrics and log of `{run_id}`): {stages}"
RETRY_RERUN = "Runs again: {stages}"
RETRY_RERUN_STAGE = "`{stage}` ({reason})"
# Cost (issue 14): the estimate made before any launch, and what the clusters cost.
COST_ESTIMATE = ":moneybag: Estimate {text}"
COST_ACTUAL = ":moneybag: Cost {text}"
COST_SO_FAR = ":moneybag: Cost so far {text}"
OVER_BUDGET = ":warning: *Over budget*: {text}"
APPROVAL_WAITING = (
    ":moneybag: *Waiting for approval*: {reason}. Nothing is launched until it is approved "
    "(`/skyrun approve {run_id}` here, `/skyrun approve` on the pull request, or "
    "`skyrun approve {run_id}`); otherwise it is cancelled {expires}."
)
APPROVAL_GIVEN = ":moneybag: Approved by {user}: {reason}"
BUTTON_APPROVE = "Approve"
