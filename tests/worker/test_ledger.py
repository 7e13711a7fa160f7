"""Monthly budgets: the ledger of what a repository's runs cost this month, on a real worker.

Prices are SKYRUN_CPU_HOUR_USD=3600 ($1 a second for the task's one CPU), so measured up times
are dollars one can reason about; each pipeline's worst case is 1 minute: $60.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from tests.runs import clusters_left, request_for, wait_finished
from worker.budget import OVER_MONTH
from worker.contract import RunProgress, RunState, StageState, lane_for_branch
from worker.costview import OVER_BUDGET, over_budget_text
from worker.ledger import month_of, spent_this_month
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

FILES = {
    ".skyrun.yaml": "timeout_minutes: 1\nstages:\n  - {name: train, task: train.yaml}\n",
    "train.yaml": "resources: {cpus: 1}\nrun: sleep 3\n",
}


async def waiting(control: RunControl, run_id: str) -> RunProgress:
    async def poll() -> RunProgress:
        while True:
            progress = await control.progress(run_id)
            if progress is not None and progress.state is RunState.AWAITING_APPROVAL:
                return progress
            if progress is not None and progress.state.finished:
                raise AssertionError(f"{run_id} ended {progress.state.value}: {progress.error}")
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 60)


async def test_a_run_that_would_pass_the_monthly_budget_waits_and_costs_are_counted_once(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    settings = make_settings(SKYRUN_CPU_HOUR_USD="3600", SKYRUN_MONTHLY_BUDGETS="*=62")
    repo = git_repo(FILES)
    month = month_of(datetime.now(UTC).isoformat())
    queue = settings.temporal_task_queue
    async with running_workers(build_workers(client, settings)):
        control = RunControl(client, queue)
        assert await spent_this_month(client, str(repo), month, queue) == 0
        # $60 estimated (worst case) and nothing spent: within $62, it runs at once.
        first = await control.start(request_for(repo))
        done = await wait_finished(control, first.run_id)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.cost_usd is not None and done.cost_usd >= 3
        spent = await spent_this_month(client, str(repo), month, queue)
        assert spent == done.cost_usd

        # Another lane has no history: $60 again, but with what was spent it passes $62.
        other = request_for(repo, lane=lane_for_branch(str(repo), "other"))
        second = await control.start(other)
        progress = await waiting(control, second.run_id)
        assert progress.approval is not None
        assert progress.approval.reason == OVER_MONTH.format(
            estimate="$60.00",
            repo=str(repo),
            budget="$62.00",
            glob="*",
            spent=f"${spent:,.2f}",
        )
        assert [s.state for s in progress.stages] == [StageState.PENDING]
        assert clusters_left(settings) == []

        assert await control.approve(second.run_id, "maria", via="cli") == ""
        approved = await wait_finished(control, second.run_id)
        assert approved.state is RunState.SUCCEEDED, approved.error
        assert approved.cost_usd is not None
        total = await spent_this_month(client, str(repo), month, queue)
        assert round(total, 6) == round(spent + approved.cost_usd, 6)


async def test_a_run_that_costs_more_than_its_limit_is_reported_not_stopped(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    settings = make_settings(SKYRUN_CPU_HOUR_USD="3600")
    files = {
        ".skyrun.yaml": (
            "budget: {max_run_usd: 2}\ntimeout_minutes: 1\n"
            "stages:\n  - {name: train, task: train.yaml}\n"
        ),
        "train.yaml": "resources: {cpus: 1}\nenvs: {NAP: '0'}\nrun: sleep $NAP\n",
    }
    repo = git_repo(files)
    async with running_workers(build_workers(client, settings)):
        control = RunControl(client, settings.temporal_task_queue)
        # No history: the worst case ($60) is above $2, so the first run needs approval.
        first = await control.start(request_for(repo))
        await waiting(control, first.run_id)
        assert await control.approve(first.run_id, "maria") == ""
        quick = await wait_finished(control, first.run_id)
        assert quick.state is RunState.SUCCEEDED and over_budget_text(quick) == ""
        # The lane's history says about a second: within $2, it runs at once, then takes longer.
        second = await control.start(request_for(repo, envs={"NAP": "3"}))
        slow = await wait_finished(control, second.run_id)

    assert slow.state is RunState.SUCCEEDED, slow.error
    assert slow.approval is None and slow.budget_usd == 2
    assert slow.estimate_usd is not None and slow.estimate_usd <= 2
    assert slow.cost_usd is not None and slow.cost_usd > 3
    assert over_budget_text(slow) == OVER_BUDGET.format(
        cost=f"${slow.cost_usd:,.2f}", limit="$2.00"
    )
