"""Who may start and cancel runs from Slack: the allow lists in settings (pure)."""

from __future__ import annotations

from collections.abc import Callable

from bot.slack import texts
from bot.slack.access import cancel_denial, start_denial, user_allowed
from worker.contract import RunState
from worker.runcontrol import RunSummary
from worker.settings import Settings


def _run(requested_by: str, repo: str = "acme/widgets", trigger: str = "slack") -> RunSummary:
    return RunSummary(
        run_id="widgets-1",
        repo=repo,
        ref="main",
        commit="",
        trigger=trigger,
        requested_by=requested_by,
        state=RunState.RUNNING,
        pr_number=None,
        started_at=None,
        finished_at=None,
    )


def test_who_may_start_and_cancel(make_settings: Callable[..., Settings]) -> None:
    anyone = make_settings()
    assert start_denial(anyone, "U1", "acme/widgets") is None
    assert cancel_denial(anyone, "U2", _run("U1")) is None

    listed = make_settings(
        SKYRUN_SLACK_ALLOWED_USERS="U0ADMIN, U0OPS", SKYRUN_ALLOWED_REPOS="acme/*"
    )
    assert user_allowed(listed, "U0OPS") and not user_allowed(listed, "U1")
    assert start_denial(listed, "U0OPS", "acme/widgets") is None
    assert start_denial(listed, "U0OPS", "Acme/Widgets") is None  # GitHub names ignore case
    assert start_denial(listed, "U1", "acme/widgets") == texts.DENIED_USER.format(user="U1")
    assert start_denial(listed, "U0OPS", "evil/x") == texts.DENIED_REPO.format(repo="evil/x")
    # The starter may cancel their own run even when not (or no longer) on the list.
    assert cancel_denial(listed, "U1", _run("U1")) is None
    assert cancel_denial(listed, "U0ADMIN", _run("U1")) is None
    denial = cancel_denial(listed, "U2", _run("U1"))
    assert denial == texts.DENIED_CANCEL.format(run_id="widgets-1", starter="<@U1>")
    push = cancel_denial(listed, "U2", _run("octocat", trigger="push"))
    assert push == texts.DENIED_CANCEL.format(run_id="widgets-1", starter="octocat")
    assert cancel_denial(listed, "U0ADMIN", _run("U1", repo="evil/x")) is not None
