"""Budgets (DESIGN.md "Cost estimate"): whether a run's estimate must be approved before anything
is launched. Fail closed: with a limit set, an unknown estimate needs approval too."""

from __future__ import annotations

from dataclasses import dataclass

from worker.costview import format_usd

OVER_PIPELINE = "the estimate {estimate} is above budget.max_run_usd ({limit}) of .skyrun.yaml"
OVER_DEPLOYMENT = "the estimate {estimate} is above SKYRUN_APPROVAL_USD ({limit})"
UNKNOWN_ESTIMATE = "the estimate is unknown and a budget of {limit} per run is set ({source})"
EXPIRED = "not approved within {hours:g} h: {reason}"
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
