"""A Slack `/skyrun` run command as a run request, and what identifies one Slack request (pure).

The text itself is parsed by worker/commands.py (the one `/skyrun` parser, slash form).
"""

from __future__ import annotations

import hashlib

from worker.commands import Command
from worker.contract import DEFAULT_BRANCH, RunRequest, SlackTarget, Trigger, lane_for_branch
from worker.links import GitHubHost


def delivery_id(trigger_id: str, body: str) -> str:
    """What identifies one Slack request across its retries (they repeat the same trigger id)."""
    if trigger_id:
        return f"slack:{trigger_id}"
    return "slack:" + hashlib.sha256(body.encode()).hexdigest()[:32]


def run_request(
    command: Command,
    *,
    github: GitHubHost,
    user: str,
    channel: str,
    response_url: str,
    delivery: str,
) -> RunRequest:
    """The run a parsed slash `run` command asks for (the clone URL from the configured host)."""
    return RunRequest(
        repo=command.repo,
        clone_url=github.clone_url(command.repo),
        ref=command.ref,
        stages=list(command.stages),
        envs=dict(command.envs),
        trigger=Trigger.SLACK,
        requested_by=user,
        lane=lane_for_branch(command.repo, command.ref or DEFAULT_BRANCH),
        delivery_id=delivery,
        slack=SlackTarget(channel=channel, user=user, response_url=response_url),
    )
