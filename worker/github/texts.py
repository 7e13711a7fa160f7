"""Every text skyrun writes on GitHub: comment and check-run templates, replies, gate reasons."""

from __future__ import annotations

from worker.contract import RunState, StageState

# Hidden tags: the first line of every comment skyrun posts (see contract.MARKER).
RUN_TAG = "<!-- skyrun:run {run_id} -->"
REPLY_TAG = "<!-- skyrun:reply {delivery} -->"
OUTDATED_TAG = "<!-- skyrun:outdated -->"

CHECK_NAME = "skyrun"
MAX_COMMENT_CHARS = 65536
MAX_CHECK_TEXT_CHARS = 65535

STATE_EMOJI = {
    RunState.QUEUED: "⏳",
    RunState.RUNNING: "🏃",
    RunState.SUCCEEDED: "✅",
    RunState.FAILED: "❌",
    RunState.CANCELLED: "🚫",
    RunState.TIMED_OUT: "⏱️",
    RunState.SKIPPED: "⏭️",
    RunState.DENIED: "🔒",
    RunState.AWAITING_APPROVAL: "💰",
}
STATE_WORDS = {
    RunState.QUEUED: "queued",
    RunState.RUNNING: "running",
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.CANCELLED: "was cancelled",
    RunState.TIMED_OUT: "timed out",
    RunState.SKIPPED: "was skipped",
    RunState.DENIED: "was not run",
    RunState.AWAITING_APPROVAL: "waits for budget approval",
}
STAGE_EMOJI = {
    StageState.PENDING: "⏸️ pending",
    StageState.RUNNING: "🏃 running",
    StageState.SUCCEEDED: "✅ succeeded",
    StageState.FAILED: "❌ failed",
    StageState.CANCELLED: "🚫 cancelled",
    StageState.SKIPPED: "⏭️ skipped",
}
CHECK_CONCLUSION = {
    RunState.SUCCEEDED: "success",
    RunState.FAILED: "failure",
    RunState.CANCELLED: "cancelled",
    RunState.TIMED_OUT: "timed_out",
    RunState.SKIPPED: "neutral",
    RunState.DENIED: "neutral",
}

# The sticky comment of a run.
HEADER = "### {emoji} skyrun run [`{run_id}`]({run_url}) {state}"
SUBJECT = "Commit `{commit}` of `{ref}` · {trigger} · {duration}"
SUBJECT_NO_COMMIT = "`{ref}` · {trigger}"
TRIGGER_COMMENT = "asked for by @{user}"
TRIGGER_PUSH = "pushed by @{user}"
TRIGGER_PULL_REQUEST = "pull request by @{user}"
TRIGGER_MERGE_GROUP = "merge queue group queued by @{user}"
TRIGGER_OTHER = "started by {user}"
FORK_COMMIT = (
    "This is the head of `{head_repo}` when @{user} commented; later pushes to the fork are "
    "not run until a maintainer comments `/skyrun` again."
)
STAGES_HEADING = "| stage | state | duration | cluster | log |\n| --- | --- | --- | --- | --- |"
STAGE_ROW = "| `{name}` | {state}{recovered} | {duration} | `{cluster}`{shared} | {log} |"
RECOVERED = " ({note})"
SHARED_CLUSTER = " (shared)"
CLUSTER_NOTE = " ({note})"
"""A warm cluster reused, or one provisioned while the stage's needs ran (formatting.py)."""
# Stages as a DAG: how the stages run, when some run at the same time (∥).
STAGE_FLOW = "Stages: {flow}"
LOG_LINK = "[log]({url})"
METRICS_HEADING = "#### Metrics"
METRICS_TABLE = "| metric | value |\n| --- | --- |"
METRIC_ROW = "| `{name}` | {value} |"
METRICS_TABLE_BASE = (
    "| metric | value | [`{ref}`]({base_url}) @ `{commit}` | change |\n| --- | --- | --- | --- |"
)
METRIC_ROW_BASE = "| `{name}` | {value} | {base} | {change} |"
METRICS_FOLDED = "… and {count} more metrics on the [run page]({run_url})."
NO_BASELINE = "_No successful run of `{ref}` to compare with yet._"
REPORT_HEADING = "#### Report"
STAGE_REPORT_HEADING = "##### `{stage}`"
REPORT_TRUNCATED = "\n\n… _(report truncated; the full report is on the [run page]({run_url}))_"
LINKS = "[Run page]({run_url}) · [Temporal UI]({temporal_url})"
DASHBOARD_LINK = " · [SkyPilot dashboard]({url})"
OUTDATED_NOTE = (
    "> [!NOTE]\n> Outdated: a newer run for this pull request is [`{run_id}`]({run_url})."
)
OUTDATED_FOLD = "<details><summary>This earlier run</summary>\n\n{body}\n\n</details>"

# Failures and other endings: what happened and what to do next.
FAILED_STAGE_HEADING = "#### ❌ Stage `{stage}` failed"
FAILED_RUN_HEADING = "#### ❌ The run failed before its stages ran"
ERROR_QUOTE = "> {line}"
LOG_TAIL = (
    "<details><summary>Last {count} log lines of <code>{stage}</code></summary>\n\n"
    "{fence}text\n{lines}\n{fence}\n\n</details>\n\n[Full log of `{stage}`]({log_url})"
)
NEXT_COMMENT_FAILED = (
    "**Next:** fix it and push, then comment `/skyrun` to run again "
    "(or `/skyrun {stage}` to rerun only that stage)."
)
NEXT_COMMENT_RUN_FAILED = "**Next:** fix it and push, then comment `/skyrun` to run again."
NEXT_PUSH_FAILED = "**Next:** push a fix to run again."
TIMED_OUT = (
    "**Next:** make the stage faster or raise `timeout_minutes` in `.skyrun.yaml`, then run again."
)
CANCELLED = "The run was cancelled ({error}); every cluster it launched was torn down."
DENIED = "Nothing was run: {reason}."
SKIPPED = "Nothing was run: {reason}."

# Check run output.
CHECK_TITLE_QUEUED = "Queued"
CHECK_TITLE_RUNNING = "Running {stage} ({index} of {count})"
CHECK_TITLE_PREPARING = "Checking out and planning"
CHECK_TITLE_SUCCEEDED = "{count} of {count} stages succeeded"
CHECK_TITLE_FAILED_STAGE = "Stage {stage} failed"
CHECK_TITLE_FAILED = "The run failed"
CHECK_TITLE_OTHER = "The run {state}"

# Replies to comment commands.
REPLY_HELP = "{usage}"
REPLY_USAGE = "I could not read that command: {error}.\n\n{usage}"
REPLY_DENIED = "🔒 Nothing was done: {reason}."
REPLY_CANCELLED = "🚫 Cancelled {runs}; their clusters are being torn down."
REPLY_NOTHING_TO_CANCEL = "There is no running skyrun run on this pull request to cancel."
REPLY_ALREADY_RUNNING = (
    "A run of `{commit}` with the same stages and settings is already in progress: "
    "[`{run_id}`]({run_url}). Nothing new was started; comment `/skyrun cancel` to stop it."
)
REPLY_STATUS_HEADING = (
    "Recent skyrun runs of this pull request:\n\n"
    "| run | state | commit | asked for by | started |\n| --- | --- | --- | --- | --- |"
)
REPLY_STATUS_ROW = "| [`{run_id}`]({run_url}) | {state} | `{commit}` | {user} | {started} |"
REPLY_STATUS_EMPTY = "No skyrun runs for this pull request yet; comment `/skyrun` to start one."

# Gate reasons (shown after "Nothing was run: " / "Nothing was done: ").
NEEDS_WRITE = (
    "@{user} needs write access to {repo} to {what} (their permission is {permission}); "
    "a maintainer can comment `/skyrun` instead"
)
WHAT_RUN = "start runs"
WHAT_CANCEL = "cancel runs"
WHAT_APPROVE = "approve runs over budget"
NEEDS_MAINTAIN = (
    "@{user} needs the maintain or admin role on {repo} to {what} (their role is {role}); "
    "ask a maintainer to comment `/skyrun approve`"
)
REPLY_APPROVED = "💰 Approved {runs}: launching now."
REPLY_NOTHING_TO_APPROVE = "No skyrun run on this pull request waits for approval."
FORK_PR = "pull requests from forks run only when a maintainer comments `/skyrun` on them"
FORK_GONE = "the pull request's fork was deleted, so its commits cannot be run"
PR_CLOSED = "pull request #{number} is closed"
HEAD_UNCERTAIN = (
    "`{head_repo}` received a push after the comment, so skyrun cannot be sure its head "
    "`{commit}` is the commit that was reviewed. Look at the latest commits and comment "
    "`/skyrun` again"
)

# Quality gates (`gates:` in .skyrun.yaml): what they decided, in the comment and the check run.
GATES_HEADING = "#### Gates"
GATES_TABLE = "| gate | result | value | threshold | note |\n| --- | --- | --- | --- | --- |"
GATE_ROW = "| `{expr}` | {result} | {value} | {threshold} | {note} |"
GATE_PASSED = "✅ passed"
GATE_FAILED = "❌ failed"
GATES_FAILED_WORDS = "succeeded, but a gate failed"
GATES_FAILED_HEADING = "#### ❌ Gate failed: {summary}"
GATES_FAILED_NEXT = (
    "All stages succeeded; the metrics do not meet the `gates:` of `.skyrun.yaml`, so the "
    "`skyrun` check fails. **Next:** improve the result and push, or change the gate in a "
    "reviewed commit."
)
CHECK_TITLE_GATE_FAILED = "gate failed: {summary}"
CHECK_TITLE_GATES_FAILED = "gate failed: {summary} (and {more} more)"
CHECK_TITLE_GATES_PASSED = "{count} of {count} stages succeeded · {gates} of {gates} gates passed"

# Retry from the failed stage (worker/retry.py): the run's comment and check run, and replies.
RETRY_HEADING = "#### ♻️ Retry of [`{run_id}`]({run_url}) from its failed stage"
RETRY_REUSED = "- reused (not run again; result, metrics and log of `{run_id}`): {stages}"
RETRY_RERUN = "- runs again: {stages}"
RETRY_RERUN_STAGE = "`{stage}` ({reason})"
REUSED_STATE = "♻️ reused"
NEXT_RETRY = (
    "**Or:** comment `/skyrun retry` to retry from the failed stage (same commit and values; "
    "the stages that succeeded are reused)."
)
WHAT_RETRY = "retry runs"
REPLY_RETRY_REFUSED = "♻️ Nothing was retried: {reason}."
REPLY_ALREADY_RETRIED = (
    "♻️ Run [`{run_id}`]({run_url}) was already retried as [`{retry_id}`]({retry_url}); "
    "a run is retried once. Comment `/skyrun retry` again to retry the retry once it has failed."
)
RETRY_NO_RUN = (
    "pull request #{number} has no failed or cancelled skyrun run to retry; comment `/skyrun` "
    "to start one"
)
RETRY_HEAD_MOVED = (
    "the pull request's head moved to `{head}` since run `{run_id}` ran `{commit}`; a retry "
    "runs the same commit, so comment `/skyrun` to run the new head"
)
RETRY_COMMIT_GONE = (
    "commit `{commit}` of run `{run_id}` is no longer part of pull request #{number} (its branch "
    "was force-pushed; the head is `{head}`); comment `/skyrun` to run the head"
)
# Cost (issue 14): the estimate made before any launch, and what the clusters cost.
COST_ESTIMATE = "**Estimate** {text}"
COST_ACTUAL = "**Cost** {text}"
COST_SO_FAR = "**Cost so far** {text}"
OVER_BUDGET = "⚠️ **Over budget**: {text}"
APPROVAL_WAITING = (
    "**Waiting for approval**: {reason}. Nothing is launched until a maintainer comments "
    "`/skyrun approve` (or runs `skyrun approve {run_id}`); otherwise it is cancelled at "
    "{expires}."
)
APPROVAL_GIVEN = "**Approved** by {user}: {reason}"
