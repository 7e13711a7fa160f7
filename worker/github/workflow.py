"""The delivery workflows: one per webhook delivery, keyed by its id, so the bot makes a single
Temporal call and a redelivery is refused at once.

A push or pull_request delivery goes to the RunControl (dedupe, lane supersede, start or cancel).
A `/skyrun` comment, a check run's button (Re-run, Retry failed stage, Cancel) and GitHub's own
Re-run (of a check run or suite) need GitHub, which the bot never calls, so everything happens
here: 👀 at once (comments), the commenter's permission and (for a run) the commit as of the
comment, then the run is started, retried or cancelled through the RunControl, or a reply is
posted (help, usage, status, denial, "already running"). A started run reports on its own
(sticky comment, check run, 🚀).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    # Passed through by name: the sandbox must resolve RunDelivery.request's types in it.
    import worker.contract  # noqa: F401
    from worker.commands import CommandKind
    from worker.github.activities import GitHubCommandActivities
    from worker.github.auth import NO_CREDENTIALS_TYPE
    from worker.github.contract import (
        COMMAND_WORKFLOW,
        DELIVERY_WORKFLOW,
        GitHubCommand,
        RunDelivery,
    )
    from worker.github.models import (
        CommandResult,
        DispatchOutput,
        ReplyInput,
        ReplyKind,
        Resolution,
        StartRunInput,
        StartSweepOutput,
    )

API_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=[NO_CREDENTIALS_TYPE],
)
TEMPORAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=10,
)
API_TIMEOUT = timedelta(minutes=1)
REPLIES = {
    CommandKind.HELP: ReplyKind.HELP,
    CommandKind.USAGE: ReplyKind.USAGE,
    CommandKind.STATUS: ReplyKind.STATUS,
}


@workflow.defn(name=DELIVERY_WORKFLOW)
class GitHubDeliveryWorkflow:
    @workflow.run
    async def run(self, delivery: RunDelivery) -> DispatchOutput:
        return await workflow.execute_activity_method(
            GitHubCommandActivities.dispatch,
            delivery,
            start_to_close_timeout=API_TIMEOUT,
            retry_policy=TEMPORAL_RETRY,
        )


@workflow.defn(name=COMMAND_WORKFLOW)
class GitHubCommandWorkflow:
    @workflow.run
    async def run(self, command: GitHubCommand) -> CommandResult:
        if command.comment_id:
            try:
                await workflow.execute_activity_method(
                    GitHubCommandActivities.acknowledge,
                    command,
                    start_to_close_timeout=API_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=3),
                )
            except ActivityError as err:
                workflow.logger.warning("could not acknowledge the comment: %s", err.cause or err)
        if command.action in REPLIES:
            await self._reply(ReplyInput(command, REPLIES[command.action], detail=command.error))
            return CommandResult(command.action.value)
        resolution = await workflow.execute_activity_method(
            GitHubCommandActivities.resolve,
            command,
            start_to_close_timeout=API_TIMEOUT,
            retry_policy=API_RETRY,
        )
        if command.from_check:
            # A check suite's Re-run names only the commit: the worker found the run on it.
            command.run_id = resolution.run_id or command.run_id
            command.check_run_id = resolution.check_run_id or command.check_run_id
        if not resolution.allowed:
            await self._reply(ReplyInput(command, ReplyKind.DENIED, detail=resolution.reason))
            return CommandResult("denied")
        if command.from_check and not command.run_id:
            return CommandResult("no_run", commit=command.head_sha)
        if command.action is CommandKind.RETRY:
            return await self._retry(command, resolution)
        if command.action is CommandKind.APPROVE:
            approved = await workflow.execute_activity_method(
                GitHubCommandActivities.approve_runs,
                command,
                start_to_close_timeout=API_TIMEOUT,
                retry_policy=TEMPORAL_RETRY,
            )
            kind = ReplyKind.APPROVED if approved.run_ids else ReplyKind.NOTHING_TO_APPROVE
            await self._reply(ReplyInput(command, kind, run_ids=approved.run_ids))
            return CommandResult("approved", approved.run_ids)
        if command.action is CommandKind.CANCEL:
            cancelled = await workflow.execute_activity_method(
                GitHubCommandActivities.cancel_runs,
                command,
                start_to_close_timeout=API_TIMEOUT,
                retry_policy=TEMPORAL_RETRY,
            )
            kind = ReplyKind.CANCELLED if cancelled.run_ids else ReplyKind.NOTHING_TO_CANCEL
            if not (command.from_check and cancelled.run_ids):
                # A cancelled check run says so itself: a button gets a reply only for nothing.
                await self._reply(ReplyInput(command, kind, run_ids=cancelled.run_ids))
            return CommandResult("cancelled", cancelled.run_ids)
        if command.action is CommandKind.SWEEP:
            return await self._sweep(command, resolution)
        started = await workflow.execute_activity_method(
            GitHubCommandActivities.start_run,
            StartRunInput(command, resolution),
            start_to_close_timeout=API_TIMEOUT,
            retry_policy=TEMPORAL_RETRY,
        )
        if not started.started:
            await self._reply(
                ReplyInput(
                    command,
                    ReplyKind.ALREADY_RUNNING,
                    run_ids=[started.run_id],
                    commit=resolution.commit,
                )
            )
            return CommandResult("already_running", [started.run_id], resolution.commit)
        return CommandResult("started", [started.run_id], resolution.commit)

    async def _retry(self, command: GitHubCommand, resolution: Resolution) -> CommandResult:
        """Retry from the failed stage: the retry reports on its own; refusals get a reply."""
        retried = await workflow.execute_activity_method(
            GitHubCommandActivities.retry_run,
            StartRunInput(command, resolution),
            start_to_close_timeout=API_TIMEOUT,
            retry_policy=TEMPORAL_RETRY,
        )
        if retried.refused:
            await self._reply(ReplyInput(command, ReplyKind.RETRY_REFUSED, detail=retried.refused))
            return CommandResult("retry_refused")
        if not retried.started:
            await self._reply(
                ReplyInput(
                    command,
                    ReplyKind.ALREADY_RETRIED,
                    run_ids=[retried.retry_of, retried.run_id],
                )
            )
            return CommandResult("already_retried", [retried.run_id], resolution.commit)
        return CommandResult("retried", [retried.run_id], resolution.commit)

    async def _sweep(self, command: GitHubCommand, resolution: Resolution) -> CommandResult:
        """A permitted `/skyrun sweep`: its runs report in one comment, posted by the sweep."""
        sweep: StartSweepOutput = await workflow.execute_activity_method(
            GitHubCommandActivities.start_sweep,
            StartRunInput(command, resolution),
            start_to_close_timeout=API_TIMEOUT,
            retry_policy=TEMPORAL_RETRY,
        )
        if sweep.refused:
            await self._reply(ReplyInput(command, ReplyKind.USAGE, detail=sweep.refused))
            return CommandResult("refused")
        return CommandResult("started", [sweep.sweep_id], resolution.commit)

    async def _reply(self, data: ReplyInput) -> None:
        await workflow.execute_activity_method(
            GitHubCommandActivities.reply,
            data,
            start_to_close_timeout=API_TIMEOUT,
            retry_policy=API_RETRY,
        )
