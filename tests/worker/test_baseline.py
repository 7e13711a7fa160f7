"""One baseline rule, on real runs: the latest earlier success of the base (or same) branch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from tests.runs import request_for, wait_finished
from worker.baseline import Baseline, Baselines, baseline_ref
from worker.contract import GitHubTarget, RunProgress, RunState, Trigger, lane_for_pr
from worker.runcontrol import RunControl
from worker.settings import Settings

PIPELINE = "stages: [{name: eval, task: eval.yaml}]\n"
EVAL = "run: |\n  echo '::metric accuracy={value}'\n  exit {code}\n"


async def run(
    control: RunControl,
    git_repo: Callable[..., Path],
    value: float,
    *,
    code: int = 0,
    **fields: object,
) -> RunProgress:
    repo = git_repo({".skyrun.yaml": PIPELINE, "eval.yaml": EVAL.format(value=value, code=code)})
    outcome = await control.start(request_for(repo, **fields))
    return await wait_finished(control, outcome.run_id)


async def eventually(baselines: Baselines, progress: RunProgress, run_id: str | None) -> None:
    """Visibility lags: wait until the lookup sees the expected baseline (or none)."""
    found: Baseline | None = None
    for _ in range(100):
        found = await baselines.of(progress)
        if (found.run_id if found else None) == run_id:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"baseline {found} != {run_id}")


async def test_the_same_baseline_rule_for_branch_and_pull_request_runs(
    client: Client, control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    baselines = Baselines(client, settings.temporal_task_queue)
    first = await run(control, git_repo, 0.80, trigger=Trigger.PUSH)
    # Whatever triggered it: a Slack run of main is main's newest success.
    second = await run(control, git_repo, 0.85, trigger=Trigger.SLACK)
    failed = await run(control, git_repo, 0.99, code=1, trigger=Trigger.PUSH)
    assert (first.state, second.state, failed.state) == (
        RunState.SUCCEEDED,
        RunState.SUCCEEDED,
        RunState.FAILED,
    )
    await eventually(baselines, failed, second.run_id)
    await eventually(baselines, second, first.run_id)  # started before it, not after
    await eventually(baselines, first, None)

    pr = await run(
        control,
        git_repo,
        0.9,
        ref="feature-x",
        trigger=Trigger.COMMENT,
        lane=lane_for_pr("acme/x", 7),
        github=GitHubTarget(pr_number=7, base_branch="main"),
    )
    assert baseline_ref(pr) == "main"
    await eventually(baselines, pr, second.run_id)
    found = await baselines.of(pr)
    assert found == Baseline(second.run_id, second.commit, "main", {"accuracy": 0.85})
    assert Baseline.loads(found.dumps()) == found

    # Another deployment's runs on the same Temporal namespace are never a baseline.
    assert await Baselines(client, "another-deployment").of(failed) is None
