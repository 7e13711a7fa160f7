"""Every reply the Slack front door gives, in one place (mrkdwn templates)."""

from __future__ import annotations

USAGE = """\
*Usage*
• `{command} OWNER/REPO[@REF] [STAGE ...] [KEY=VALUE ...]` run a repository's pipeline (or \
only the named stages) on the tip of REF (default: its default branch), \
e.g. `{command} acme/models@main train LR=0.01`
• `{command} status [RUN]` the state of a run, or the latest runs
• `{command} cancel RUN` cancel a run; every cluster it launched is torn down
• `{command} help` this text"""

E_EMPTY = "Tell me what to run."
E_UNKNOWN = "`{word}` is neither a command (status, cancel, help) nor a repository as OWNER/REPO."
E_QUOTES = "The command has an unbalanced quote: {detail}."
E_REF = "`{ref}` is not a branch, tag or commit name: {problem}."
E_LIMIT = "{detail}."
E_STAGE = "`{stage}` is not a stage name (letters, digits, `.`, `_` and `-`)."
E_ENV = "Bad KEY=VALUE: {detail}."
E_STATUS_ARGS = "`status` takes at most one run id."
E_CANCEL_ARGS = "`cancel` takes one run id, as in `{command} cancel widgets-1a2b3c4d5e`."
E_HELP_ARGS = "`help` takes no arguments."
E_RUN_ID = "`{value}` is not a run id (run ids look like `widgets-1a2b3c4d5e`)."
USAGE_ERROR = ":warning: {error}\n{usage}"

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
