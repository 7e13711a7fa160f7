"""`/skyrun approve` on a pull request: a maintainer lets a run over budget go, a writer is
refused with a reply; the wait is shown on the PR while it lasts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.worker.github.stack import Stack, github_stack, unique_repo
from worker.budget import OVER_PIPELINE
from worker.contract import RunProgress, RunState
from worker.github import texts
from worker.settings import Settings

FILES = {
    ".skyrun.yaml": "budget: {max_run_usd: 1}\ntimeout_minutes: 10\n"
    "stages:\n  - {name: train, task: train.yaml}\n",
    "train.yaml": "resources: {cpus: 1}\nrun: echo '::metric accuracy=0.9'\n",
}


@pytest.fixture
async def stack(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Stack]:
    async with github_stack(client, make_settings, tmp_path, SKYRUN_CPU_HOUR_USD="12") as running:
        yield running


async def waiting(stack: Stack, run_id: str) -> RunProgress:
    async def poll() -> RunProgress:
        while True:
            progress = await stack.control.progress(run_id)
            if progress is not None and progress.state is RunState.AWAITING_APPROVAL:
                return progress
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 60)


async def test_a_maintainer_approves_a_run_over_budget_and_a_writer_is_refused(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {"README.md": "hi"})
    fake.grant(repo, "wendy", "write")
    fake.grant(repo, "mia", "maintain")
    fake.commit(repo, FILES, branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")
    started = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    run_id = started.run_ids[0]
    await waiting(stack, run_id)
    reason = OVER_PIPELINE.format(estimate="$2.00", limit="$1.00")

    async def shown() -> str:
        for _ in range(100):
            body = fake.bot_comments(repo, pull.number)[0].body
            if "**Waiting for approval**" in body:
                return body
            await asyncio.sleep(0.05)
        raise AssertionError("the PR never showed the wait")

    body = await shown()
    assert "above budget.max\\_run\\_usd" in body or "above budget.max_run_usd" in body
    (check,) = fake.check_runs_for(repo, fake.head(repo, "feature"))
    assert check.data["status"] == "queued"

    refused = await stack.command(fake.add_comment(repo, pull.number, "wendy", "/skyrun approve"))
    assert refused.outcome == "denied"
    denial = fake.bot_comments(repo, pull.number)[-1].body
    assert "@wendy needs the maintain or admin role" in denial and "(their role is write)" in denial
    assert (await waiting(stack, run_id)).approval is not None

    approved = await stack.command(fake.add_comment(repo, pull.number, "mia", "/skyrun approve"))
    assert (approved.outcome, approved.run_ids) == ("approved", [run_id])
    assert texts.REPLY_APPROVED.split("{")[0] in fake.bot_comments(repo, pull.number)[-1].body
    progress = await stack.finished(run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.approval is not None and progress.approval.approved_by == "mia"
    assert progress.approval.reason == reason
    body = fake.bot_comments(repo, pull.number)[0].body
    assert "**Approved** by mia: the estimate" in body

    again = await stack.command(fake.add_comment(repo, pull.number, "mia", "/skyrun approve"))
    assert again.outcome == "approved" and again.run_ids == []
    assert texts.REPLY_NOTHING_TO_APPROVE in fake.bot_comments(repo, pull.number)[-1].body
