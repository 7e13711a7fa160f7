"""Activities of the delivery workflows: dispatch a push or pull_request; acknowledge, decide,
start or cancel, and reply to a comment command."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from worker.commands import CommandKind
from worker.contract import GitHubTarget, RunRequest, Trigger, lane_for_pr
from worker.github import render
from worker.github.auth import GitHubAuth, api_errors
from worker.github.contract import GitHubCommand, RunDelivery
from worker.github.gate import GitHubGate
from worker.github.models import (
    CancelOutput,
    DispatchOutput,
    ReplyInput,
    ReplyKind,
    ReplyOutput,
    Resolution,
    StartRunInput,
    StartRunOutput,
)
from worker.limits import RequestTooLarge
from worker.links import Links
from worker.runcontrol import DELIVERY, LANE_CANCELLED, RunControl, StartOutcome

STATUS_RUNS = 10
CANCELLED_BY = "cancelled by @{user} with `/skyrun cancel`"


def run_request(command: GitHubCommand, resolution: Resolution) -> RunRequest:
    """The pipeline run a permitted `/skyrun` asks for, pinned to the resolved commit."""
    return RunRequest(
        repo=command.repo,
        clone_url=command.clone_url,
        ref=resolution.ref,
        commit=resolution.commit,
        stages=list(command.stages),
        envs=dict(command.envs),
        trigger=Trigger.COMMENT,
        requested_by=command.requested_by,
        lane=lane_for_pr(command.repo, command.pr_number),
        delivery_id=command.delivery_id,
        requested_at=command.received_at,
        github=GitHubTarget(
            installation_id=command.installation_id,
            pr_number=command.pr_number,
            comment_id=command.comment_id,
            base_branch=resolution.base_branch or None,
            head_repo=resolution.head_repo or None,
        ),
        default_branch=command.default_branch,
    )


class GitHubCommandActivities:
    """Bound to this worker's GitHub auth and gate, and a Temporal client for the runs."""

    def __init__(
        self, auth: GitHubAuth, gate: GitHubGate, client: Client, task_queue: str, links: Links
    ) -> None:
        self.auth = auth
        self.gate = gate
        self.client = client
        self.control = RunControl(client, task_queue)
        self.links = links

    @activity.defn(name="github_dispatch")
    async def dispatch(self, delivery: RunDelivery) -> DispatchOutput:
        """Start the delivery's run (dedupe, lane supersede) or cancel its lane's runs."""
        if delivery.request is None:
            cancelled = await self.control.cancel_lane(
                delivery.cancel_lane, delivery.reason or LANE_CANCELLED, delivery.requested_at
            )
            return DispatchOutput(cancelled=cancelled)
        outcome = await self._start(delivery.request)
        started = outcome.started or await self._started_by(outcome.run_id, delivery.delivery_id)
        return DispatchOutput(outcome.run_id, started, outcome.superseded)

    @activity.defn(name="github_acknowledge")
    async def acknowledge(self, command: GitHubCommand) -> None:
        """👀 on the command comment: seen (adding the same reaction twice is a no-op)."""
        await asyncio.to_thread(self._react, command, "eyes")

    def _react(self, command: GitHubCommand, content: str) -> None:
        with api_errors(self.auth):
            repo = self.auth.client(command.repo, command.installation_id).get_repo(command.repo)
            repo.get_issue(command.pr_number).get_comment(command.comment_id).create_reaction(
                content
            )

    @activity.defn(name="github_resolve_command")
    async def resolve(self, command: GitHubCommand) -> Resolution:
        return await self.gate.resolve(command, run=command.action is CommandKind.RUN)

    @activity.defn(name="github_start_run")
    async def start_run(self, data: StartRunInput) -> StartRunOutput:
        outcome = await self._start(run_request(data.command, data.resolution))
        delivery = data.command.delivery_id
        started = outcome.started or await self._started_by(outcome.run_id, delivery)
        return StartRunOutput(run_id=outcome.run_id, started=started)

    async def _start(self, request: RunRequest) -> StartOutcome:
        try:
            return await self.control.start(request)
        except RequestTooLarge as err:
            raise ApplicationError(str(err), type="RequestTooLarge", non_retryable=True) from None

    async def _started_by(self, run_id: str, delivery_id: str) -> bool:
        """Whether `run_id` is this delivery's own run (an earlier attempt of the activity)."""
        try:
            desc = await self.client.get_workflow_handle(run_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return desc.typed_search_attributes.get(DELIVERY) == delivery_id

    @activity.defn(name="github_cancel_runs")
    async def cancel_runs(self, command: GitHubCommand) -> CancelOutput:
        lane = lane_for_pr(command.repo, command.pr_number)
        reason = CANCELLED_BY.format(user=command.requested_by)
        return CancelOutput(await self.control.cancel_lane(lane, reason, command.received_at))

    @activity.defn(name="github_reply")
    async def reply(self, data: ReplyInput) -> ReplyOutput:
        runs = []
        if data.kind is ReplyKind.STATUS:
            lane = lane_for_pr(data.command.repo, data.command.pr_number)
            runs = await self.control.list_runs(lane=lane, limit=STATUS_RUNS)
        body = render.reply(data, self.links, runs, self.auth.masker)
        attempt = activity.info().attempt
        return ReplyOutput(await asyncio.to_thread(self._post, data.command, body, attempt))

    def _post(self, command: GitHubCommand, body: str, attempt: int) -> int:
        tag = render.reply_tag(command.delivery_id)
        with api_errors(self.auth):
            repo = self.auth.client(command.repo, command.installation_id).get_repo(command.repo)
            issue = repo.get_issue(command.pr_number)
            if attempt > 1:
                # An earlier attempt may have posted before failing: never reply twice.
                for comment in issue.get_comments():
                    if (comment.body or "").startswith(tag + "\n"):
                        return int(comment.id)
            return int(issue.create_comment(body).id)
