"""What the bot hands the worker for a GitHub delivery: plain dataclasses and names only.

The bot starts one workflow per delivery, keyed by the delivery id (a redelivery is a duplicate
id, refused by Temporal at once), and the worker does the rest through the RunControl: the
request path makes a single Temporal call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

from worker.commands import CommandKind
from worker.contract import RunRequest
from worker.sweepspec import SweepAxis

COMMAND_WORKFLOW = "SkyrunGitHubCommand"
DELIVERY_WORKFLOW = "SkyrunGitHubDelivery"


class CommandSource(str, Enum):
    """Where a command came from (the values travel in workflow inputs: never change one)."""

    COMMENT = "comment"
    BUTTON = "button"
    """A check run's requested action (`rerun`, `cancel`)."""
    RERUN = "rerun"
    """GitHub's own Re-run of a check run or check suite (`rerequested`)."""


@dataclass
class GitHubCommand:
    """One `/skyrun` comment on a pull request, as the signed delivery described it; or a check
    run's button (`requested_action`) or GitHub's own Re-run (`rerequested`), which have no
    comment (`comment_id` 0) and, off a pull request, no `pr_number` (0)."""

    action: CommandKind
    repo: str
    clone_url: str
    pr_number: int
    comment_id: int
    comment_created_at: str
    requested_by: str
    delivery_id: str
    installation_id: int | None = None
    default_branch: str = ""
    stages: list[str] = field(default_factory=list)
    envs: dict[str, str] = field(default_factory=dict)
    error: str = ""
    """For USAGE: what was wrong with the command."""
    received_at: int = 0
    """Nanoseconds since the epoch when the bot received the delivery (orders the lane)."""
    source: CommandSource = CommandSource.COMMENT
    run_id: str = ""
    """A check run's action: the run it names (the check run's external_id); "" when only the
    commit is known (a check suite's Re-run: the worker finds skyrun's check run on it)."""
    check_run_id: int = 0
    """A check run's action: the check run (where a refusal is written without a pull request)."""
    head_sha: str = ""
    """A check run's or check suite's commit."""
    sweep: list[SweepAxis] = field(default_factory=list)
    """A `/skyrun sweep`: the swept settings (`KEY=a,b`), in the order typed."""

    @property
    def from_check(self) -> bool:
        return self.source is not CommandSource.COMMENT


@dataclass
class RunDelivery:
    """A `push` or `pull_request` delivery: start `request`, or cancel the runs of a lane."""

    delivery_id: str
    request: RunRequest | None = None
    cancel_lane: str = ""
    reason: str = ""
    requested_at: int = 0
    """When the bot received it: runs of the lane requested before are cancelled too."""


def delivery_workflow_id(delivery_id: str) -> str:
    """One workflow per delivery: a redelivered webhook maps to the same id."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:20]
    return f"github-delivery-{digest}"


MARKER = "<!-- skyrun:"
"""Every comment skyrun posts starts with a hidden tag beginning with this, so it never reads
its own comments as commands and can find them again."""
