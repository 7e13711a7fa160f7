"""Cost end to end on the local backend, priced with SKYRUN_GPU_HOUR_USD / SKYRUN_CPU_HOUR_USD:
the estimate is in the run's progress and on the PR before any stage starts, the actual cost
comes from the clusters' measured up times, and a lane's second run estimates from its first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.worker.github.stack import Stack, github_stack, unique_repo
from worker.contract import RunProgress, RunState, StageState
from worker.costview import WORST_CASE, format_minutes
from worker.settings import Settings

GPU_HOUR = 720.0
CPU_HOUR = 36.0
"""Prices so high that a second of a test costs dollars (shown as such, not as <$0.01)."""


def pipeline(gate: Path) -> dict[str, str]:
    return {
        ".skyrun.yaml": (
            "on: {push: [main]}\ntimeout_minutes: 60\nstages:\n"
            "  - {name: prepare, task: prepare.yaml}\n"
            "  - {name: train, task: train.yaml}\n"
            "  - {name: eval, task: eval.yaml, cluster: train}\n"
        ),
        "prepare.yaml": "resources: {cpus: 2}\nrun: echo preparing\n",
        "train.yaml": (
            "resources: {accelerators: 'A100:1', cpus: '4+'}\n"
            f"run: |\n  while [ ! -e {gate} ]; do sleep 0.05; done\n  sleep 1\n"
            "  echo '::metric accuracy=0.9'\n"
        ),
        "eval.yaml": "run: echo evaluating\n",
    }


@pytest.fixture
async def stack(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Stack]:
    async with github_stack(
        client,
        make_settings,
        tmp_path,
        SKYRUN_GPU_HOUR_USD=str(GPU_HOUR),
        SKYRUN_CPU_HOUR_USD=str(CPU_HOUR),
    ) as running:
        yield running


async def running_stage(stack: Stack, run_id: str, stage: str) -> RunProgress:
    async def poll() -> RunProgress:
        while True:
            progress = await stack.control.progress(run_id)
            if progress and any(
                s.name == stage and s.state is StageState.RUNNING for s in progress.stages
            ):
                return progress
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 60)


async def api(stack: Stack, run_id: str) -> dict[str, Any]:
    response = await stack.http.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def until_listed_succeeded(stack: Stack, run_id: str, repo: str) -> None:
    """Visibility catches up with a finished run (the next run's estimate reads it there)."""
    for _ in range(100):
        runs = await stack.control.list_runs(repo=repo, state="succeeded")
        if any(run.run_id == run_id for run in runs):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{run_id} never listed as succeeded")


async def test_estimate_before_the_stages_and_cost_from_up_times_on_the_pr_and_the_api(
    stack: Stack, gate: Path
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {"README.md": "hi"})
    fake.commit(repo, pipeline(gate), branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")
    result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    run_id = result.run_ids[0]

    # While train waits for the gate: the whole estimate is known, nothing ran before it.
    live = await running_stage(stack, run_id, "train")
    prepare_hourly = CPU_HOUR * 2
    train_hourly = GPU_HOUR * 1 + CPU_HOUR * 4
    assert [(e.stage, e.hourly_usd, e.minutes, e.from_run) for e in live.estimate] == [
        ("prepare", prepare_hourly, 60, ""),
        ("train", train_hourly, 60, ""),
        ("eval", train_hourly, 60, ""),
    ]
    assert live.estimate_usd == pytest.approx(prepare_hourly + 2 * train_hourly)
    assert live.estimate[1].resources == "1\u00d7 A100, 4 CPUs on local"
    assert live.cost_usd is not None and live.cost_usd > 0
    (comment,) = fake.bot_comments(repo, pull.number)
    # The first report that lists stages already carries the estimate.
    first_with_stages = next(body for body in comment.history if "| `prepare` |" in body)
    assert "**Estimate** ≈ \\$" in first_with_stages
    assert "worst case 60 min: no earlier successful run" in first_with_stages, first_with_stages
    assert "**Cost so far**" in comment.body

    gate.touch()
    progress = await stack.finished(run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    clusters = {c.cluster: c for c in progress.clusters}
    assert set(clusters) == {"prepare", "train"}
    for cluster in clusters.values():
        assert cluster.down_at and cluster.up_s >= cluster.busy_s > 0
        assert cluster.hourly_usd is not None
        assert cluster.cost_usd == pytest.approx(cluster.hourly_usd * cluster.up_s / 3600, abs=1e-6)
    train_stage = progress.stages[1]
    assert clusters["train"].up_s >= 1.0  # the job slept a second
    assert train_stage.duration_s is not None and train_stage.duration_s >= 1.0
    assert progress.cost_usd == pytest.approx(
        sum(c.cost_usd or 0 for c in clusters.values()), abs=1e-6
    )
    assert sum(s.cost_usd or 0 for s in progress.stages) == pytest.approx(
        progress.cost_usd, abs=1e-6
    )

    data = await api(stack, run_id)
    assert data["estimate_usd"] == pytest.approx(progress.estimate_usd)
    assert data["cost_usd"] == pytest.approx(progress.cost_usd)
    assert [s["cost_usd"] for s in data["stages"]] == [s.cost_usd for s in progress.stages]
    body = fake.bot_comments(repo, pull.number)[0].body
    assert "**Cost** \\$" in body and "(shared)" in body
    page = (await stack.http.get(f"/runs/{run_id}")).text
    assert 'data-role="estimate"' in page and 'data-role="cluster-cost"' in page
    listing = (await stack.http.get("/api/runs", params={"repo": repo})).json()
    assert listing["runs"][0]["cost_usd"] == pytest.approx(progress.cost_usd)


async def test_a_lanes_second_run_estimates_from_its_last_successful_run(
    stack: Stack, gate: Path
) -> None:
    gate.touch()
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, pipeline(gate))
    first_id = await stack.push(repo, "main", fake.head(repo))
    first = await stack.finished(first_id)
    assert first.state is RunState.SUCCEEDED, first.error
    await until_listed_succeeded(stack, first_id, repo)

    fake.commit(repo, {"README.md": "again"})
    second_id = await stack.push(repo, "main", fake.head(repo))
    second = await stack.finished(second_id)

    assert second.state is RunState.SUCCEEDED, second.error
    by_stage = {s.name: s.duration_s for s in first.stages}
    for line in second.estimate:
        assert line.from_run == first_id
        assert line.minutes == pytest.approx((by_stage[line.stage] or 0) / 60, abs=1e-3)
    assert second.estimate_usd is not None and second.estimate_usd < first.estimate_usd  # type: ignore[operator]
    (check,) = fake.check_runs_for(repo, fake.head(repo))
    summary = check.data["output"]["summary"]
    assert f"from run {first_id}" in summary
    assert WORST_CASE.format(duration=format_minutes(60)) not in summary
