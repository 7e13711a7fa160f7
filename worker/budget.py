"""Budgets (DESIGN.md "Cost estimate"): whether a run's estimate must be approved before anything
is launched. Fail closed: with a limit set, an unknown estimate needs approval too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from worker.costview import format_usd

OVER_PIPELINE = "the estimate {estimate} is above budget.max_run_usd ({limit}) of .skyrun.yaml"
OVER_DEPLOYMENT = "the estimate {estimate} is above SKYRUN_APPROVAL_USD ({limit})"
UNKNOWN_ESTIMATE = "the estimate is unknown and a budget of {limit} per run is set ({source})"
EXPIRED = "not approved within {hours:g} h: {reason}"
OVER_MONTH = (
    "the estimate {estimate} would take {repo} past its monthly budget of {budget} "
    "(SKYRUN_MONTHLY_BUDGETS {glob}): {spent} spent this month"
)
UNKNOWN_MONTH = (
    "{repo} has a monthly budget of {budget} (SKYRUN_MONTHLY_BUDGETS {glob}) and {what} is unknown"
)
UNKNOWN_ESTIMATE_WHAT = "the estimate"
UNKNOWN_SPENT_WHAT = "this month's spend ({error})"
E_MONTHLY = (
    "SKYRUN_MONTHLY_BUDGETS: {entry!r} is not GLOB=USD (e.g. acme/*=500,acme/big=2000): {problem}"
)
PIPELINE_SOURCE = "budget.max_run_usd"
DEPLOYMENT_SOURCE = "SKYRUN_APPROVAL_USD"


@dataclass(frozen=True)
class Verdict:
    reason: str
    """Why the run must wait ("" when it need not)."""
    limit_usd: float = 0.0


def judge(estimate_usd: float | None, max_run_usd: float, approval_usd: float) -> Verdict:
    """The tighter of the pipeline's and the deployment's per-run limits (0: none) decides."""
    limits = [
        (limit, template, source)
        for limit, template, source in (
            (max_run_usd, OVER_PIPELINE, PIPELINE_SOURCE),
            (approval_usd, OVER_DEPLOYMENT, DEPLOYMENT_SOURCE),
        )
        if limit > 0
    ]
    if not limits:
        return Verdict("")
    limit, template, source = min(limits, key=lambda item: item[0])
    if estimate_usd is None:
        return Verdict(UNKNOWN_ESTIMATE.format(limit=format_usd(limit), source=source), limit)
    if estimate_usd > limit:
        reason = template.format(estimate=format_usd(estimate_usd), limit=format_usd(limit))
        return Verdict(reason, limit)
    return Verdict("")


@dataclass(frozen=True)
class MonthlyBudget:
    glob: str
    """`owner/repo` glob the budget is for (fnmatch, case-sensitive)."""
    usd: float


def parse_monthly_budgets(text: str) -> list[MonthlyBudget]:
    """`acme/*=500,acme/big=2000` as budgets; raises ValueError naming the entry at fault."""
    budgets = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        glob, sep, amount = (piece.strip() for piece in entry.partition("="))
        if not sep or not glob:
            raise ValueError(E_MONTHLY.format(entry=entry, problem="no GLOB=USD"))
        try:
            usd = float(amount)
        except ValueError:
            raise ValueError(E_MONTHLY.format(entry=entry, problem="USD is no number")) from None
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(E_MONTHLY.format(entry=entry, problem="USD must be 0 or more"))
        budgets.append(MonthlyBudget(glob, usd))
    return budgets


def monthly_budget_for(repo: str, budgets: list[MonthlyBudget]) -> MonthlyBudget | None:
    """The budget that applies to `repo`: an exact name wins, else the longest matching glob
    (so `acme/big=2000` overrides `acme/*=500` for acme/big)."""
    matching = [budget for budget in budgets if fnmatchcase(repo, budget.glob)]
    if not matching:
        return None
    exact = [budget for budget in matching if budget.glob == repo]
    return (exact or sorted(matching, key=lambda budget: len(budget.glob)))[-1]


def judge_month(
    repo: str,
    estimate_usd: float | None,
    spent_usd: float | None,
    budget: MonthlyBudget,
    error: str = "",
) -> Verdict:
    """Whether the run would take the repository past its monthly budget (fail closed)."""
    shown = {"repo": repo, "budget": format_usd(budget.usd), "glob": budget.glob}
    if estimate_usd is None:
        return Verdict(UNKNOWN_MONTH.format(what=UNKNOWN_ESTIMATE_WHAT, **shown), budget.usd)
    if spent_usd is None:
        what = UNKNOWN_SPENT_WHAT.format(error=error or "the ledger did not answer")
        return Verdict(UNKNOWN_MONTH.format(what=what, **shown), budget.usd)
    if spent_usd + estimate_usd > budget.usd:
        reason = OVER_MONTH.format(
            estimate=format_usd(estimate_usd), spent=format_usd(spent_usd), **shown
        )
        return Verdict(reason, budget.usd)
    return Verdict("")
