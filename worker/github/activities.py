"""Activities of the delivery workflows: dispatch a push or pull_request; acknowledge, decide,
start or cancel, and reply to a comment command."""

from __future__ import annotations

import asyncio
import dataclasses

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from worker.commands import CommandKind
from worker.contract import GitHubTarget, RunRequest, RunState, Trigger, lane_for_pr
from worker.github import render, texts
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
    RetryRunOutput,
    StartRunInput,
    StartRunOutput,
    StartSweepOutput,
)
from worker.limits import RequestTooLarge
from worker.links import Links
from worker.retry import RetryRefused
from worker.runcontrol import DELIVERY, LANE_CANCELLED, REPO, RunControl, StartOutcome
from worker.sweepspec import DEFAULT_MAX_SWEEP, SweepRequest, SweepTooLarge

STATUS_RUNS = 10
CANCELLED_BY = "cancelled by @{user} with `/skyrun cancel`"
RUN_UNKNOWN = (
    "run {run_id} of this check run is not known to this skyrun deployment (it may have "
    "expired from Temporal's retention); comment `/skyrun` on the pull request or push to start "
    "a new run"
)
NO_CHECK_RUN = "no skyrun check run on commit {commit}; nothing to re-run"
CHECK_NOTE_TITLE = "skyrun: {what}"
CHECK_NOTE_SEPARATOR = "\n\n---\n\n"
"""A reply to a check run's button off a pull request goes into the check run's output (GitHub
lets an App write only its own check runs, and a button has no conversation to comment on):
the note, then the results that were there."""
NOTE_TITLES = {
    ReplyKind.DENIED: "nothing was done",
    ReplyKind.ALREADY_RUNNING: "already running",
    ReplyKind.NOTHING_TO_CANCEL: "nothing to cancel",
    ReplyKind.RETRY_REFUSED: "nothing was retried",
    ReplyKind.ALREADY_RETRIED: "already retried",
}
RETRY_STATES = (RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT)
"""The runs `/skyrun retry` on a pull request looks for (its newest run that did compute)."""
NOT_COMPUTED = (RunState.DENIED, RunState.SKIPPED)
MAX_SUMMARY_CHARS = 65535
"""GitHub's limit for a check run output's summary."""


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
        self,
        auth: GitHubAuth,
        gate: GitHubGate,
        client: Client,
        task_queue: str,
        links: Links,
        max_sweep: int = DEFAULT_MAX_SWEEP,
    ) -> None:
        self.auth = auth
        self.gate = gate
        self.client = client
        self.control = RunControl(client, task_queue)
        self.links = links
        self.max_sweep = max_sweep

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
        if command.from_check:
            return await self._resolve_check(command)
        if command.action is CommandKind.APPROVE:
            return await self.gate.resolve_approver(command)
        if command.action is CommandKind.RETRY:
            return await self._resolve_retry(command)
        run = command.action in (CommandKind.RUN, CommandKind.SWEEP)
        return await self.gate.resolve(command, run=run)

    async def _resolve_check(self, command: GitHubCommand) -> Resolution:
        """May the clicker act (write access, as for comments), and on which run."""
        resolution = await asyncio.to_thread(self._check_permission, command)
        if not resolution.allowed or not resolution.run_id:
            return resolution
        if command.action is CommandKind.RUN:
            original = await self._original(resolution.run_id)
            known = original is not None and original.repo.lower() == command.repo.lower()
        else:
            known = (await self._run_repo(resolution.run_id) or "").lower() == command.repo.lower()
        if not known:
            reason = RUN_UNKNOWN.format(run_id=resolution.run_id)
            return dataclasses.replace(resolution, allowed=False, reason=reason)
        return resolution

    def _check_permission(self, command: GitHubCommand) -> Resolution:
        what = texts.WHAT_RUN if command.action is CommandKind.RUN else texts.WHAT_CANCEL
        if command.action is CommandKind.RETRY:
            what = texts.WHAT_RETRY
        with api_errors(self.auth):
            repo = self.auth.client(command.repo, command.installation_id).get_repo(command.repo)
            denial = self.gate._denial(repo, command.repo, command.requested_by, what)
            if denial:
                return Resolution(allowed=False, reason=denial, check_run_id=command.check_run_id)
            if command.run_id:
                return Resolution(
                    allowed=True,
                    commit=command.head_sha,
                    run_id=command.run_id,
                    check_run_id=command.check_run_id,
                )
            # A check suite's Re-run names only the commit: skyrun's newest check run on it.
            newest = max(
                (
                    c
                    for c in repo.get_commit(command.head_sha).get_check_runs(
                        check_name=texts.CHECK_NAME
                    )
                    if c.external_id
                ),
                key=lambda c: c.id,
                default=None,
            )
        if newest is None:
            return Resolution(allowed=True, commit=command.head_sha)
        return Resolution(
            allowed=True, commit=command.head_sha, run_id=newest.external_id, check_run_id=newest.id
        )

    async def _original(self, run_id: str) -> RunRequest | None:
        """The request a run was started with (its history's first event), or None if unknown."""
        handle = self.client.get_workflow_handle(run_id)
        try:
            async for event in handle.fetch_history_events():
                started = event.workflow_execution_started_event_attributes
                payloads = list(started.input.payloads)
                if not payloads:
                    return None
                (request,) = await self.client.data_converter.decode(payloads[:1], [RunRequest])
                return request if isinstance(request, RunRequest) else None
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        return None

    async def _run_repo(self, run_id: str) -> str | None:
        try:
            desc = await self.client.get_workflow_handle(run_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        return desc.typed_search_attributes.get(REPO)

    @activity.defn(name="github_start_run")
    async def start_run(self, data: StartRunInput) -> StartRunOutput:
        if data.command.from_check:
            request = await self._rerun_request(data.command)
        else:
            request = run_request(data.command, data.resolution)
        outcome = await self._start(request)
        delivery = data.command.delivery_id
        started = outcome.started or await self._started_by(outcome.run_id, delivery)
        return StartRunOutput(run_id=outcome.run_id, started=started)

    @activity.defn(name="github_start_sweep")
    async def start_sweep(self, data: StartRunInput) -> StartSweepOutput:
        """A sweep of the resolved commit, one run per combination (at most SKYRUN_MAX_SWEEP);
        its id comes from the delivery, so a retry of this activity finds the same sweep."""
        request = SweepRequest(run_request(data.command, data.resolution), list(data.command.sweep))
        try:
            outcome = await self.control.start_sweep(request, self.max_sweep)
        except SweepTooLarge as err:
            return StartSweepOutput(refused=str(err))
        except RequestTooLarge as err:
            raise ApplicationError(str(err), type="RequestTooLarge", non_retryable=True) from None
        return StartSweepOutput(outcome.run_id, started=True)

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

    async def _rerun_request(self, command: GitHubCommand) -> RunRequest:
        """The check run's run again: the same commit, stages and envs, asked by the clicker."""
        original = await self._original(command.run_id)
        if original is None:
            raise ApplicationError(
                RUN_UNKNOWN.format(run_id=command.run_id), type="RunUnknown", non_retryable=True
            )
        github = original.github or GitHubTarget(installation_id=command.installation_id)
        return dataclasses.replace(
            original,
            commit=original.commit or command.head_sha,
            requested_by=command.requested_by,
            delivery_id=command.delivery_id,
            requested_at=command.received_at,
            supersedes=[],
            # No comment to react to: the run reports on its check run and pull request.
            github=dataclasses.replace(github, comment_id=None),
        )

    @activity.defn(name="github_cancel_runs")
    async def cancel_runs(self, command: GitHubCommand) -> CancelOutput:
        if command.from_check:
            cancelled = await self.control.cancel(command.run_id)
            return CancelOutput([command.run_id] if cancelled else [])
        lane = lane_for_pr(command.repo, command.pr_number)
        reason = CANCELLED_BY.format(user=command.requested_by)
        return CancelOutput(await self.control.cancel_lane(lane, reason, command.received_at))

    # Retry from the failed stage: `/skyrun retry` and the check run's Retry failed stage.
    async def _resolve_retry(self, command: GitHubCommand) -> Resolution:
        """May the commenter retry, which run (the PR's newest that computed), and is its commit
        still the pull request's head."""
        lane = lane_for_pr(command.repo, command.pr_number)
        runs = await self.control.list_runs(lane=lane, limit=STATUS_RUNS)
        latest = next((run for run in runs if run.state not in NOT_COMPUTED), None)
        return await asyncio.to_thread(
            self._retry_permission_and_head,
            command,
            latest.run_id if latest else "",
            latest.commit if latest else "",
        )

    def _retry_permission_and_head(
        self, command: GitHubCommand, run_id: str, commit: str
    ) -> Resolution:
        with api_errors(self.auth):
            repo = self.auth.client(command.repo, command.installation_id).get_repo(command.repo)
            denial = self.gate._denial(repo, command.repo, command.requested_by, texts.WHAT_RETRY)
            if denial:
                return Resolution(allowed=False, reason=denial)
            if not run_id:
                reason = texts.RETRY_NO_RUN.format(number=command.pr_number)
                return Resolution(allowed=False, reason=reason)
            pull = repo.get_pull(command.pr_number)
            if pull.state == "closed":
                reason = texts.PR_CLOSED.format(number=command.pr_number)
                return Resolution(allowed=False, reason=reason)
            head = pull.head.sha
            if head != commit:
                # GitHub lists at most 250 commits of a pull request: past that, "moved".
                contained = any(c.sha == commit for c in pull.get_commits())
                template = texts.RETRY_HEAD_MOVED if contained else texts.RETRY_COMMIT_GONE
                reason = template.format(
                    head=render.short(head),
                    run_id=run_id,
                    commit=render.short(commit),
                    number=command.pr_number,
                )
                return Resolution(allowed=False, reason=reason)
            return Resolution(allowed=True, commit=commit, run_id=run_id)

    @activity.defn(name="github_retry_run")
    async def retry_run(self, data: StartRunInput) -> RetryRunOutput:
        """Start the retry of the resolved run, asked by the commenter or clicker."""
        command, run_id = data.command, data.resolution.run_id or data.command.run_id
        original = await self.control.request_of(run_id)
        target = (original.github if original else None) or GitHubTarget()
        changes: dict[str, object] = {
            "requested_by": command.requested_by,
            "requested_at": command.received_at,
            "delivery_id": command.delivery_id,
            # The comment gets the retry's 🚀; a button has none.
            "github": dataclasses.replace(
                target,
                installation_id=command.installation_id or target.installation_id,
                comment_id=command.comment_id or None,
            ),
        }
        if not command.from_check:
            changes["trigger"] = Trigger.COMMENT  # authorized again by the run, as any comment
        try:
            outcome = await self.control.retry(run_id, **changes)
        except RetryRefused as err:
            return RetryRunOutput(retry_of=run_id, refused=str(err))
        except RequestTooLarge as err:
            raise ApplicationError(str(err), type="RequestTooLarge", non_retryable=True) from None
        started = outcome.started or await self._started_by(outcome.run_id, command.delivery_id)
        return RetryRunOutput(outcome.run_id, started, run_id)

    @activity.defn(name="github_approve_runs")
    async def approve_runs(self, command: GitHubCommand) -> CancelOutput:
        """Approve the pull request's runs that wait for budget approval (budgets, issue 14)."""
        lane = lane_for_pr(command.repo, command.pr_number)
        approved = []
        for run_id in await self.control.lane_members(lane):
            if not await self.control.approve(run_id, command.requested_by, via="github"):
                approved.append(run_id)
        return CancelOutput(approved)

    @activity.defn(name="github_reply")
    async def reply(self, data: ReplyInput) -> ReplyOutput:
        runs = []
        if data.kind is ReplyKind.STATUS:
            lane = lane_for_pr(data.command.repo, data.command.pr_number)
            runs = await self.control.list_runs(lane=lane, limit=STATUS_RUNS)
        body = render.reply(data, self.links, runs, self.auth.masker)
        attempt = activity.info().attempt
        if data.command.from_check and not data.command.pr_number:
            if not data.command.check_run_id:
                return ReplyOutput(0)
            await asyncio.to_thread(self._note_on_check_run, data, body)
            return ReplyOutput(0)
        return ReplyOutput(await asyncio.to_thread(self._post, data.command, body, attempt))

    def _note_on_check_run(self, data: ReplyInput, body: str) -> None:
        """The reply, on top of the check run's output (once: a retry finds it there)."""
        command = data.command
        tag = render.reply_tag(command.delivery_id)
        with api_errors(self.auth):
            repo = self.auth.client(command.repo, command.installation_id).get_repo(command.repo)
            check = repo.get_check_run(command.check_run_id)
            summary = (check.output.summary or "") if check.output else ""
            if tag in summary:
                return
            title = CHECK_NOTE_TITLE.format(what=NOTE_TITLES.get(data.kind, data.kind.value))
            check.edit(
                output={
                    "title": title,
                    "summary": render.cut(body + CHECK_NOTE_SEPARATOR + summary, MAX_SUMMARY_CHARS),
                }
            )

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
