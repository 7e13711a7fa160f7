"""Budgets: which estimates wait for approval (fail closed), and the wait itself on a real
worker: nothing launched before approval, `skyrun approve` lets the run go, an unapproved run
ends cancelled when its (durable) timer runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.runs import clusters_left, request_for, wait_finished
from worker.budget import (
    DEPLOYMENT_SOURCE,
    EXPIRED,
    OVER_DEPLOYMENT,
    OVER_MONTH,
    OVER_PIPELINE,
    UNKNOWN_ESTIMATE,
    MonthlyBudget,
    Verdict,
    judge,
    judge_month,
    monthly_budget_for,
    parse_monthly_budgets,
)
from worker.contract import RunProgress, RunState, StageState
from worker.process import build_workers, running_workers
from worker.runcontrol import NOT_WAITING, RunControl
from worker.settings import Settings


def test_no_limit_no_approval_even_for_an_unknown_estimate() -> None:
    assert judge(None, 0, 0) == Verdict("")
    assert judge(1e9, 0, 0) == Verdict("")


def test_the_tighter_limit_decides_and_an_estimate_at_the_limit_passes() -> None:
    assert judge(5.0, 5.0, 0) == Verdict("")
    assert judge(5.01, 5.0, 100) == Verdict(
        OVER_PIPELINE.format(estimate="$5.01", limit="$5.00"), 5.0
    )
    assert judge(7.0, 10.0, 6.5) == Verdict(
        OVER_DEPLOYMENT.format(estimate="$7.00", limit="$6.50"), 6.5
    )


def test_an_unknown_estimate_with_a_limit_set_waits_for_approval() -> None:
    verdict = judge(None, 0, 20)
    assert verdict == Verdict(UNKNOWN_ESTIMATE.format(limit="$20.00", source=DEPLOYMENT_SOURCE), 20)


FILES = {
    ".skyrun.yaml": (
        "budget: {max_run_usd: 1}\ntimeout_minutes: 10\n"
        "stages:\n  - {name: train, task: train.yaml}\n"
    ),
    "train.yaml": "resources: {cpus: 1}\nrun: echo '::metric accuracy=0.9'\n",
}


async def waiting(control: RunControl, run_id: str) -> RunProgress:
    async def poll() -> RunProgress:
        while True:
            progress = await control.progress(run_id)
            if progress is not None and progress.state is RunState.AWAITING_APPROVAL:
                return progress
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 60)


async def test_a_run_above_its_budget_waits_launching_nothing_until_approved(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    # 1 CPU at $1/h for the worst case of 10 minutes: $0.17 estimated; the limit is $1.
    settings = make_settings(SKYRUN_CPU_HOUR_USD="12")  # $2 estimated: above it
    async with running_workers(build_workers(client, settings)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(git_repo(FILES)))
        progress = await waiting(control, outcome.run_id)

        assert progress.approval is not None
        assert progress.approval.reason == OVER_PIPELINE.format(estimate="$2.00", limit="$1.00")
        assert (progress.approval.estimate_usd, progress.approval.limit_usd) == (2.0, 1.0)
        assert progress.approval.expires_at
        assert [s.state for s in progress.stages] == [StageState.PENDING]
        assert progress.clusters == [] and clusters_left(settings) == []
        await asyncio.sleep(0.5)  # and it stays so
        assert clusters_left(settings) == []

        assert await control.approve(outcome.run_id, "maria", via="cli") == ""
        done = await wait_finished(control, outcome.run_id)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.approval is not None and done.approval.approved_by == "maria"
        assert done.metrics == {"accuracy": 0.9}
        refused = await control.approve(outcome.run_id, "maria")
        assert refused == NOT_WAITING.format(run_id=outcome.run_id, state="succeeded")


async def test_an_unapproved_run_ends_cancelled_when_its_time_runs_out(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    settings = make_settings(SKYRUN_CPU_HOUR_USD="12", SKYRUN_APPROVAL_TIMEOUT_S="2")
    async with running_workers(build_workers(client, settings)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(git_repo(FILES)))
        await waiting(control, outcome.run_id)
        done = await wait_finished(control, outcome.run_id)

    assert done.state is RunState.CANCELLED
    assert done.error == EXPIRED.format(
        hours=2 / 3600, reason=OVER_PIPELINE.format(estimate="$2.00", limit="$1.00")
    )
    assert [s.state for s in done.stages] == [StageState.SKIPPED]
    assert clusters_left(settings) == []


@pytest.mark.parametrize("value", ["-5", "nan", "a lot"])
def test_bad_approval_limits_are_refused_at_startup(
    make_settings: Callable[..., Settings], value: str
) -> None:
    with pytest.raises(ValueError, match="SKYRUN_APPROVAL_USD"):
        make_settings(SKYRUN_APPROVAL_USD=value)


# Monthly budgets (SKYRUN_MONTHLY_BUDGETS): parsing, which applies, and the judgement.


def test_monthly_budgets_parse_and_the_most_specific_applies() -> None:
    budgets = parse_monthly_budgets(" acme/*=500, acme/big=2000 ,other/x=0.5,")
    assert budgets == [
        MonthlyBudget("acme/*", 500),
        MonthlyBudget("acme/big", 2000),
        MonthlyBudget("other/x", 0.5),
    ]
    assert monthly_budget_for("acme/big", budgets) == MonthlyBudget("acme/big", 2000)
    assert monthly_budget_for("acme/small", budgets) == MonthlyBudget("acme/*", 500)
    assert monthly_budget_for("zeta/x", budgets) is None
    wide = parse_monthly_budgets("*=10,acme/*=20")
    assert monthly_budget_for("acme/a", wide) == MonthlyBudget("acme/*", 20)
    assert parse_monthly_budgets("") == []


@pytest.mark.parametrize("text", ["acme", "=5", "acme/*=", "acme/*=lots", "a=-1", "a=nan", "a=inf"])
def test_bad_monthly_budgets_are_refused_at_startup(
    make_settings: Callable[..., Settings], text: str
) -> None:
    with pytest.raises(ValueError, match="SKYRUN_MONTHLY_BUDGETS"):
        make_settings(SKYRUN_MONTHLY_BUDGETS=text)


def test_the_month_judges_spend_plus_estimate_and_fails_closed() -> None:
    budget = MonthlyBudget("acme/*", 100)
    assert judge_month("acme/a", 40, 60, budget) == Verdict("")
    assert judge_month("acme/a", 40.01, 60, budget) == Verdict(
        OVER_MONTH.format(
            estimate="$40.01", repo="acme/a", budget="$100.00", glob="acme/*", spent="$60.00"
        ),
        100,
    )
    unknown = judge_month("acme/a", None, 0, budget)
    assert "the estimate is unknown" in unknown.reason and unknown.limit_usd == 100
    unread = judge_month("acme/a", 1, None, budget, "no worker")
    assert "this month's spend (no worker) is unknown" in unread.reason
