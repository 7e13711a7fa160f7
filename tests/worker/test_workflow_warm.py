"""Warm clusters (issue 12): with `keep_warm_minutes` a run's clusters stay up for its lane's
next run, which launches on them without provisioning; nobody's taking them ends in a teardown.
On a real Temporal dev server with the local backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.runs import clusters_left as cluster_entries
from tests.runs import head, request_for, wait_finished
from worker.backends.base import cluster_name_for
from worker.contract import RunProgress, RunState, StageState, lane_for_branch
from worker.runcontrol import RunControl
from worker.settings import Settings

TASK = """\
resources: {{cpus: {cpus}}}
setup: |
  echo "setting up {name}"
run: |
  {run}
"""


def warm_pipeline(
    minutes: int = 5, train_run: str = "echo trained", cpus: int = 1
) -> dict[str, str]:
    return {
        "prep.yaml": TASK.format(name="prep", run="echo prepared", cpus=1),
        "train.yaml": TASK.format(name="train", run="echo trained", cpus=cpus),
        ".skyrun.yaml": f"keep_warm_minutes: {minutes}\n"
        "stages:\n  - {name: prep, task: prep.yaml}\n  - {name: train, task: train.yaml}\n",
    }


def clusters_left(settings: Settings) -> list[str]:
    """The local clusters up (their directories; each has a `.run` record beside it)."""
    return [name for name in cluster_entries(settings) if not name.endswith(".run")]


def log_of(settings: Settings, run_id: str, stage: str) -> str:
    return (settings.logs_dir / run_id / f"{stage}.log").read_text()


async def run_once(control: RunControl, repo: Path, **fields: object) -> RunProgress:
    # Each run of its own commit (without one, two runs of a lane would share an id).
    outcome = await control.start(request_for(repo, commit=head(repo), **fields))
    progress = await wait_finished(control, outcome.run_id)
    return progress


async def test_the_lanes_next_run_reuses_its_warm_clusters_without_provisioning(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(warm_pipeline())
    first = await run_once(control, repo)
    assert first.state is RunState.SUCCEEDED, first.error
    names = sorted(cluster_name_for(first.run_id, c) for c in ("prep", "train"))
    # Both clusters are still up, held by the lane, each with its expiry.
    assert clusters_left(settings) == names
    assert first.clusters_up == []
    warm = await control.warm_clusters()
    assert sorted(c.name for c in warm) == names
    lane = lane_for_branch(str(repo), "main")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    for cluster in warm:
        assert cluster.run_id == first.run_id and cluster.lane == lane
        assert soon - timedelta(minutes=1) < datetime.fromisoformat(cluster.until) <= soon

    second = await run_once(control, repo)
    assert second.state is RunState.SUCCEEDED, second.error
    assert [s.cluster_reused_from for s in second.stages] == [first.run_id, first.run_id]
    assert [s.provision_started_at for s in second.stages] == ["", ""]  # nothing to provision
    for stage in ("prep", "train"):
        log = log_of(settings, second.run_id, stage)
        assert f"reused warm cluster {stage} from run {first.run_id}" in log
        assert f"setting up {stage}" in log  # its setup runs again
    assert [c.reused_from for c in second.clusters] == [first.run_id, first.run_id]
    # The same two clusters, now warm for the run after.
    assert clusters_left(settings) == names
    assert {c.run_id for c in await control.warm_clusters()} == {second.run_id}


async def test_warm_clusters_are_never_shared_across_lanes(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(warm_pipeline())
    first = await run_once(control, repo)
    other = await run_once(control, repo, lane=lane_for_branch(str(repo), "feature"))
    assert (first.state, other.state) == (RunState.SUCCEEDED, RunState.SUCCEEDED)
    assert [s.cluster_reused_from for s in other.stages] == ["", ""]
    assert len(clusters_left(settings)) == 4  # each lane keeps its own two


async def test_a_cluster_asking_for_other_resources_is_launched_fresh(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(warm_pipeline())
    first = await run_once(control, repo)
    git_repo({"train.yaml": TASK.format(name="train", run="echo trained", cpus=2)})
    second = await run_once(control, repo)
    assert second.state is RunState.SUCCEEDED, second.error
    assert [s.cluster_reused_from for s in second.stages] == [first.run_id, ""]
    assert cluster_name_for(second.run_id, "train") in clusters_left(settings)


async def test_a_failing_run_leaves_nothing_not_even_the_warm_clusters_it_took(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(warm_pipeline())
    first = await run_once(control, repo)
    assert first.state is RunState.SUCCEEDED
    git_repo({"train.yaml": TASK.format(name="train", run="exit 5", cpus=1)})
    second = await run_once(control, repo)
    assert second.state is RunState.FAILED
    assert second.stages[1].state is StageState.FAILED
    assert second.stages[1].cluster_reused_from == first.run_id
    assert clusters_left(settings) == []
    assert await control.warm_clusters() == []


async def test_a_cancelled_run_gives_back_the_warm_clusters_it_had_not_used(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(warm_pipeline())
    first = await run_once(control, repo)
    names = clusters_left(settings)
    git_repo({"prep.yaml": TASK.format(name="prep", run="echo started; sleep 300", cpus=1)})
    outcome = await control.start(request_for(repo, commit=head(repo)))

    async def prep_running() -> None:
        while "(task, pid=" not in _maybe(settings, outcome.run_id, "prep"):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(prep_running(), 60)
    await control.cancel(outcome.run_id)
    second = await wait_finished(control, outcome.run_id)
    assert second.state is RunState.CANCELLED
    # prep's warm cluster ran a job of the cancelled run: downed. train's was never used: still
    # warm for the lane, under the first run's name and expiry.
    assert clusters_left(settings) == [cluster_name_for(first.run_id, "train")]
    assert names == sorted(cluster_name_for(first.run_id, c) for c in ("prep", "train"))
    assert [c.run_id for c in await control.warm_clusters()] == [first.run_id]


async def test_a_warm_cluster_nobody_takes_is_torn_down_when_its_time_ends(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    first = await run_once(control, git_repo(warm_pipeline(minutes=1)))
    assert first.state is RunState.SUCCEEDED
    assert len(clusters_left(settings)) == 2

    async def gone() -> None:
        while clusters_left(settings) or await control.warm_clusters():
            await asyncio.sleep(1)

    await asyncio.wait_for(gone(), 120)


def _maybe(settings: Settings, run_id: str, stage: str) -> str:
    path = settings.logs_dir / run_id / f"{stage}.log"
    return path.read_text() if path.exists() else ""
