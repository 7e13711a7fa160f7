"""Sweeps from Slack, end to end: `/skyrun sweep OWNER/REPO ...` to the bot, the sweep and its
runs on a real worker, one message with the results table on the fake Slack, updated in place;
its Cancel button and `/skyrun cancel SWEEP_ID`, with the permission checks of every cancel."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError

from bot.slack import texts
from tests.fakes.slack import Message, block_action, buttons, deliver, message_text
from tests.runs import clusters_left, wait_stage_running
from tests.worker.slack.stack import PIPELINE, Stack
from worker.contract import RunState, SweepMember, Trigger
from worker.slack.blocks import ACTION_CANCEL
from worker.sweepspec import QUERY_SWEEP, SweepStatus, child_id
from worker.sweeptable import SLACK_BEST, SLACK_CONTEXT

STARTED_SWEEP_RE = re.compile(r"Started sweep `([^`]+)`")
LOSS_TRAIN = 'run: |\n  echo "::metric loss=0.$A"\n'
SLOW_TRAIN = "run: |\n  echo started\n  sleep 300\n"


async def start_sweep(stack: Stack, text: str, user: str = "U0ALICE") -> str:
    reply = await stack.reply(await stack.command(text, user=user))
    found = STARTED_SWEEP_RE.search(reply["text"])
    assert found, reply
    return found.group(1)


async def sweep_over(client: Client, sweep_id: str) -> SweepStatus:
    handle = client.get_workflow_handle(sweep_id)
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 120)
    status: SweepStatus = await handle.query(QUERY_SWEEP, result_type=SweepStatus)
    return status


def sweep_message(stack: Stack, sweep_id: str) -> Message:
    (message,) = stack.slack.top_level()
    assert f"sweep `{sweep_id}`" in message_text(message)
    return message


async def test_a_sweep_from_slack_posts_one_message_with_the_table(
    stack: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, {**PIPELINE, "train.yaml": LOSS_TRAIN})

    sweep_id = await start_sweep(stack, f"sweep {repo}@main train A=3,1")
    status = await sweep_over(client, sweep_id)

    assert status.state is RunState.SUCCEEDED
    for index, run_id in enumerate(status.run_ids):
        progress = await stack.runs.progress(run_id)
        assert progress is not None and progress.state is RunState.SUCCEEDED
        assert progress.trigger is Trigger.SLACK and progress.requested_by == "U0ALICE"
        assert progress.sweep == SweepMember(sweep_id, index, {"A": ["3", "1"][index]})
    message = sweep_message(stack, sweep_id)  # the runs post no message of their own
    text = message_text(message)
    assert f"*Sweep of {repo}@main* — all 2 runs finished" in text
    assert SLACK_CONTEXT.format(sweep_id=sweep_id, axes="`A`", count=2, who="<@U0ALICE>") in text
    lines = [line for line in text.splitlines() if "/runs/" in line and "`A=" in line]
    assert len(lines) == 2
    # No gates: the first metric ranks, higher is better.
    assert lines[0].startswith(SLACK_BEST) and "`A=3`" in lines[0]
    assert not lines[1].startswith(SLACK_BEST)
    assert "`loss` *0.3*" in lines[0] and "`loss` *0.1*" in lines[1]
    assert ":trophy: best by `loss` (higher is better)" in text
    assert ACTION_CANCEL not in buttons(message)
    assert len(stack.slack.calls_to("chat.postMessage")) == 1
    assert stack.slack.calls_to("chat.update")
    assert clusters_left(stack.settings) == []


async def test_the_cancel_button_cancels_the_sweep_and_its_runs(
    stack: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    sweep_id = await start_sweep(stack, f"sweep {repo}@main train A=1,2")
    for index in range(2):
        await wait_stage_running(stack.runs, child_id(sweep_id, index), "train")
    await stack.slack.wait_for(lambda: bool(stack.slack.top_level()), 30, "the sweep's message")
    message = sweep_message(stack, sweep_id)
    button = buttons(message)[ACTION_CANCEL]
    assert button["value"] == sweep_id

    stranger = stack.slack.response_url("stranger")
    clicked = block_action(button, response_url=stranger, message=message, user="U0MALLORY")
    assert (await deliver(stack.http, clicked)).status_code == 200
    await stack.slack.wait_for(lambda: stack.slack.responses("stranger"), 30, "the denial")
    assert stack.slack.responses("stranger")[0]["text"].startswith(":no_entry:")
    assert (await client.get_workflow_handle(sweep_id).describe()).status is not None

    starter = stack.slack.response_url("starter")
    clicked = block_action(button, response_url=starter, message=message, user="U0ALICE")
    assert (await deliver(stack.http, clicked)).status_code == 200
    status = await sweep_over(client, sweep_id)

    assert status.state is RunState.CANCELLED
    for run_id in status.run_ids:
        progress = await stack.runs.progress(run_id)
        assert progress is not None and progress.state is RunState.CANCELLED
    assert clusters_left(stack.settings) == []
    text = message_text(sweep_message(stack, sweep_id))
    assert f"*Sweep of {repo}@main* — cancelled" in text
    assert ACTION_CANCEL not in buttons(sweep_message(stack, sweep_id))


async def test_cancel_command_names_the_sweep(
    stack: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    sweep_id = await start_sweep(stack, f"sweep {repo}@main train A=1,2")
    await wait_stage_running(stack.runs, child_id(sweep_id, 0), "train")

    reply = await stack.reply(await stack.command(f"cancel {sweep_id}", user="U0ADMIN"))
    status = await sweep_over(client, sweep_id)

    assert reply["text"].startswith(texts.CANCELLED.split("{", 1)[0])
    assert status.state is RunState.CANCELLED
    assert await stack.runs.list_runs(repo=repo, running_only=True) == []
    assert clusters_left(stack.settings) == []
