"""Who may start and cancel runs from Slack (pure): the allow lists in settings."""

from __future__ import annotations

from bot.slack import texts
from worker.commands import repo_allowed
from worker.runcontrol import RunSummary
from worker.settings import Settings


def user_allowed(settings: Settings, user: str) -> bool:
    """An empty SKYRUN_SLACK_ALLOWED_USERS lets anyone in the workspace act."""
    return not settings.slack_allowed_users or user in settings.slack_allowed_users


def start_denial(settings: Settings, user: str, repo: str) -> str | None:
    """Why `user` may not start a run of `repo`, or None when they may."""
    if not user_allowed(settings, user):
        return texts.DENIED_USER.format(user=user)
    if not repo_allowed(repo, settings.allowed_repos):
        return texts.DENIED_REPO.format(repo=repo)
    return None


def cancel_denial(settings: Settings, user: str, run: RunSummary) -> str | None:
    """Why `user` may not cancel `run`: only its starter and allowed users may."""
    if run.repo and not repo_allowed(run.repo, settings.allowed_repos):
        return texts.DENIED_REPO.format(repo=run.repo)
    if user == run.requested_by or user_allowed(settings, user):
        return None
    starter = f"<@{run.requested_by}>" if run.trigger == "slack" else run.requested_by
    return texts.DENIED_CANCEL.format(run_id=run.run_id, starter=starter or "unknown")
