"""Inputs and outputs of the comment-command workflow's activities: one dataclass in, one out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from worker.github.contract import GitHubCommand


@dataclass
class Resolution:
    """Whether the commenter may act, and for a run the exact commit to run."""

    allowed: bool
    reason: str = ""
    commit: str = ""
    ref: str = ""
    base_branch: str = ""
    head_repo: str = ""
    run_id: str = ""
    """A check run's action: the run it acts on (found on the commit for a check suite's)."""
    check_run_id: int = 0


@dataclass
class StartRunInput:
    command: GitHubCommand
    resolution: Resolution


@dataclass
class StartRunOutput:
    run_id: str
    started: bool


@dataclass
class CancelOutput:
    run_ids: list[str] = field(default_factory=list)


class ReplyKind(str, Enum):
    HELP = "help"
    USAGE = "usage"
    STATUS = "status"
    DENIED = "denied"
    CANCELLED = "cancelled"
    NOTHING_TO_CANCEL = "nothing_to_cancel"
    ALREADY_RUNNING = "already_running"
    RETRY_REFUSED = "retry_refused"
    ALREADY_RETRIED = "already_retried"
    APPROVED = "approved"  # budgets (issue 14)
    NOTHING_TO_APPROVE = "nothing_to_approve"


@dataclass
class ReplyInput:
    command: GitHubCommand
    kind: ReplyKind
    detail: str = ""
    """The usage error or the reason for a denial."""
    run_ids: list[str] = field(default_factory=list)
    commit: str = ""


@dataclass
class ReplyOutput:
    comment_id: int


@dataclass
class CommandResult:
    """What the command workflow did: for the bot's logs and the tests."""

    outcome: str
    run_ids: list[str] = field(default_factory=list)
    commit: str = ""


@dataclass
class DispatchOutput:
    """What the RunControl did with a push or pull_request delivery."""

    run_id: str = ""
    started: bool = False
    superseded: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


@dataclass
class RetryRunOutput:
    """What `/skyrun retry` (or the check run's Retry button) did."""

    run_id: str = ""
    """The retry's run ("" when refused)."""
    started: bool = False
    """False when refused, or when the run was already retried (as `run_id`)."""
    retry_of: str = ""
    refused: str = ""
    """Why nothing was retried, for the reply."""


@dataclass
class StartSweepOutput:
    """What the sweep a `/skyrun sweep` asked for became."""

    sweep_id: str = ""
    started: bool = False
    refused: str = ""
    """Why nothing was started (too many combinations), for the reply."""
