"""Every reply the Slack front door gives, in one place (mrkdwn templates).

The usage text and the parser's errors are worker/commands.py's (one `/skyrun` parser).
"""

from __future__ import annotations

USAGE_ERROR = ":warning: {error}.\n{usage}"
"""A refused command: the parser's error (worker/commands.py), then the usage."""
BAD_BUTTON = ":warning: {error}."
"""A button that carries no run id (skyrun's never do)."""

DENIED_USER = (
    ":no_entry: You may not start runs: your Slack user id `{user}` is not in "
    "SKYRUN_SLACK_ALLOWED_USERS. Ask whoever runs skyrun to add it."
)
DENIED_REPO = (
    ":no_entry: skyrun does not act for `{repo}`: it matches none of SKYRUN_ALLOWED_REPOS. "
    "Ask whoever runs skyrun to add it."
)
DENIED_CANCEL = (
    ":no_entry: Only whoever started run `{run_id}` ({starter}) or a user in "
    "SKYRUN_SLACK_ALLOWED_USERS may cancel it."
)

STARTING = (
    ":hourglass_flowing_sand: Starting `{what}`{stages}{envs}… its progress will be posted in "
    "this channel."
)
STARTING_STAGES = " (stages {stages})"
STARTING_ENVS = " with {names} set"
STARTED = ":rocket: Started run <{url}|{run_id}> of `{what}`."
SUPERSEDED = " It replaces {runs} on the same branch, which {verb} being cancelled."
ALREADY = "This request already started run <{url}|{run_id}>; nothing new was started."
START_FAILED = (
    ":warning: Could not start `{what}`: {error}. Nothing was run. Try again in a minute; if it "
    "keeps failing, ask whoever runs skyrun to check `skyrun check` (Temporal must be reachable)."
)

CANCELLING = "Cancelling run `{run_id}`…"
CANCELLED = (
    ":octagonal_sign: <@{user}> cancelled run <{url}|{run_id}>; every cluster it launched is "
    "being torn down."
)
NOT_RUNNING = "Run <{url}|{run_id}> is not running (it {state}); there is nothing to cancel."
UNKNOWN_RUN = "There is no run `{run_id}` on this skyrun. `{command} status` lists the latest runs."
CANCEL_FAILED = (
    ":warning: Could not cancel run `{run_id}`: {error}. Try again, or run "
    "`skyrun cancel {run_id}` where Temporal is reachable."
)

LOOKING_UP = "Looking up {what}…"
LATEST_RUNS = "the latest runs"
STATUS_TITLE = "*Latest runs*"
STATUS_LINE = "{icon} <{url}|{run_id}> `{what}` {state} · {trigger} by {who}{when}"
NO_RUNS = "No runs yet. Start one with `{command} OWNER/REPO`."
STATUS_PARTIAL = (
    "_No worker answered for this run's details ({reason}); this is what Temporal's run list "
    "knows._"
)
STATUS_FAILED = (
    ":warning: Could not read runs from Temporal: {error}. Try again in a minute, or open "
    "<{url}|the run pages>."
)

# Retry from the failed stage (worker/retry.py): `/skyrun retry RUN` and the Retry button.
RETRYING = "Retrying run `{run_id}` from its failed stage…"
RETRIED = (
    ":recycle: <@{user}> retried run <{old_url}|{old_id}> from its failed stage as "
    "<{url}|{run_id}>: {rerun} run again, {reused} reused."
)
RETRY_NONE_REUSED = "no stage"
ALREADY_RETRIED = (
    "Run <{old_url}|{old_id}> was already retried as <{url}|{run_id}>; a run is retried once. "
    "Retry that one if it fails."
)
RETRY_REFUSED = ":no_entry: Nothing was retried: {reason}."
RETRY_FAILED = (
    ":warning: Could not retry run `{run_id}`: {error}. Nothing was started. Try again, or run "
    "`skyrun retry {run_id}` where Temporal is reachable."
)
# Sweeps (`/skyrun sweep OWNER/REPO[@REF] ... KEY=a,b`).
STARTING_SWEEP = (
    ":hourglass_flowing_sand: Starting a sweep of `{what}` over {keys} ({count} runs)… its "
    "results table will be posted in this channel."
)
STARTED_SWEEP = (
    ":rocket: Started sweep `{sweep_id}` of `{what}`: {count} runs, one per combination."
)
ALREADY_SWEEP = "This request already started sweep `{sweep_id}`; nothing new was started."
SWEEP_TOO_LARGE = ":warning: {error}. Nothing was started."
# Budgets (issue 14).
APPROVED = "<@{user}> approved run <{url}|`{run_id}`>: it launches now."
APPROVE_DENIED = (
    "<@{user}> may not approve runs over budget: ask an operator to add your Slack user id to "
    "SKYRUN_SLACK_APPROVERS."
)
APPROVE_FAILED = "Could not approve run `{run_id}`: {error}. Nothing was approved; try again."
