"""Warm clusters (issue 12): with `keep_warm_minutes` a run's clusters stay up for its lane's
next run, which launches on them without provisioning; nobody's taking them ends in a teardown.
On a real Temporal dev server with the local backend."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client

from tests.deploy.processes import fleet
from tests.runs import hand_over, handed_cluster, head, request_for, wait_finished
from worker.backends.base import cluster_name_for
from worker.backends.local import list_clusters
from worker.contract import RunProgress, RunState, StageState, lane_for_branch
from worker.coordinator import (
    QUERY_WARM,
    WarmCluster,
)
from worker.ledger import spent_this_month
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
    return list_clusters(settings.data_path / "clusters")


def second_commit(minutes: int, head: str = "") -> dict[str, str]:
    """The lane's next commit: prep computes for a while on its warm cluster; train asks for
    other resources, so its cluster is provisioned ahead (its setup takes a while too)."""
    return {
        "prep.yaml": TASK.format(name="prep", run="echo started; sleep 8", cpus=1),
        "train.yaml": "resources: {cpus: 2}\nsetup: |\n  echo provisioning; sleep 4\n"
        "run: echo trained\n",
        ".skyrun.yaml": f"{head}keep_warm_minutes: {minutes}\n"
        "stages:\n  - {name: prep, task: prep.yaml}\n  - {name: train, task: train.yaml}\n",
    }


def logged(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


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
    # It pays for them from when the lane leased them to it (before that, the lane did).
    warm_since = {c.name: c.since for c in warm}
    for held in second.clusters:
        up_at = datetime.fromisoformat(held.up_at)
        assert datetime.fromisoformat(warm_since[held.name]) < up_at
        assert up_at <= datetime.fromisoformat(second.stages[0].started_at)
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


async def test_a_teardown_waiting_for_its_worker_does_not_hold_up_the_lane(
    client: Client, control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    """A warm cluster whose time ended is torn down on its own worker's queue, which may have
    no worker for hours; the lane admits its next run meanwhile and keeps showing the cluster."""
    repo = git_repo(warm_pipeline())
    stranded = handed_cluster(repo, f"{settings.temporal_task_queue}-nobody-polls", "gone", 1)
    coordinator = await hand_over(client, settings, repo, stranded)
    await asyncio.sleep(2)  # its time has ended: its teardown waits for a worker

    run = await asyncio.wait_for(run_once(control, repo), 120)
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.cluster_reused_from for s in run.stages] == ["", ""]
    held = await coordinator.query(QUERY_WARM, result_type=list[WarmCluster])
    # Still up as far as anyone knows: listed until it is down.
    assert stranded.name in {c.name for c in held}
    assert {c.run_id for c in held} == {"gone", run.run_id}


async def test_a_run_past_its_timeout_downs_the_warm_and_provisioned_clusters_it_used(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(warm_pipeline())
    first = await run_once(control, repo)
    assert first.state is RunState.SUCCEEDED, first.error
    files = second_commit(5, head="timeout_minutes: 1\n")
    files["prep.yaml"] = TASK.format(name="prep", run="sleep 300", cpus=1)
    files["train.yaml"] = files["train.yaml"].replace("sleep 4", "sleep 300")
    git_repo(files)
    second = await asyncio.wait_for(run_once(control, repo), 150)

    assert second.state is RunState.TIMED_OUT, second.error
    prep, train = second.stages
    assert prep.cluster_reused_from == first.run_id  # timed out on the warm cluster it took
    # Its provisioning (a 300 s setup) was still going when the minute ended, and was stopped.
    provisioned = datetime.fromisoformat(train.provision_finished_at) - datetime.fromisoformat(
        train.provision_started_at
    )
    assert timedelta(seconds=45) < provisioned < timedelta(seconds=120)
    assert train.state is StageState.SKIPPED
    # Both were downed; the first run's train cluster (cpus: 1) was never taken: the lane's still.
    assert clusters_left(settings) == [cluster_name_for(first.run_id, "train")]
    assert [c.name for c in await control.warm_clusters()] == clusters_left(settings)


async def test_a_sigkilled_worker_leaves_no_cluster_provisioned_ahead_or_kept_warm(
    client: Client, task_queue: str, tmp_path: Path, git_repo: Callable[..., Path]
) -> None:
    """The worker is killed while its run computes on a warm cluster and provisions another
    ahead, and the lane holds a third warm; the worker comes back on its data dir: the run goes
    on, and once the warm minute is over nothing is left."""
    repo = git_repo(warm_pipeline(minutes=1))
    data = tmp_path / "data"
    control = RunControl(client, task_queue)
    target = client.service_client.config.target_host
    async with fleet(tmp_path / "fleet", target, task_queue) as processes:
        worker = await processes.worker("worker", data, 1)
        first = await run_once(control, repo)
        assert first.state is RunState.SUCCEEDED, first.error
        git_repo(second_commit(1))
        outcome = await control.start(request_for(repo, commit=head(repo)))
        logs = processes.log_dir / outcome.run_id
        for _ in range(600):
            if logged(logs / "prep.log", "started") and logged(logs / "train.log", "provisioning"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(worker.output())
        await processes.stop(worker, signal.SIGKILL)

        await processes.worker("worker-back", data, 1)
        second = await wait_finished(control, outcome.run_id, timeout=150)
        assert second.state is RunState.SUCCEEDED, second.error
        assert second.stages[0].cluster_reused_from == first.run_id
        assert second.stages[1].provision_started_at

        async def gone() -> None:
            while list_clusters(data / "clusters") or await control.warm_clusters():
                await asyncio.sleep(1)

        await asyncio.wait_for(gone(), 150)


async def test_the_time_a_cluster_spends_warm_is_charged_to_its_repositorys_month(
    client: Client, control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    """Runs pay for the clusters they hold; the lane's warm spells in between are charged when
    a run takes the cluster and when it is downed, each spell once (monthly budgets see it)."""
    repo = git_repo(warm_pipeline())
    taken = handed_cluster(repo, settings.worker_queue, "taken", 600, since_minutes=-60, usd=2.0)
    expiring = handed_cluster(repo, settings.worker_queue, "expiring", 60, since_minutes=-30)
    await hand_over(client, settings, repo, taken, expiring)
    month = datetime.now(UTC).strftime("%Y-%m")

    async def spent() -> float:
        return await spent_this_month(client, str(repo), month, settings.temporal_task_queue)

    async def charged(usd: float) -> None:
        while abs(await spent() - usd) > 0.05:
            await asyncio.sleep(0.2)

    # The lane's next run is leased both (it uses neither: other cluster names): an hour of
    # `taken` at $2 and half an hour of `expiring` at $3.6 so far.
    run = await run_once(control, repo)
    assert run.state is RunState.SUCCEEDED, run.error
    await asyncio.wait_for(charged(2.0 + 1.8), 90)
    back = {c.run_id: c for c in await control.warm_clusters() if c.run_id != run.run_id}
    assert sorted(back) == ["expiring", "taken"]
    assert all(
        datetime.fromisoformat(c.since) > datetime.now(UTC) - timedelta(minutes=1)
        for c in back.values()
    )  # warm again from when the run gave them back

    async def expired() -> None:
        while "expiring" in {c.run_id for c in await control.warm_clusters()}:
            await asyncio.sleep(0.5)

    before = await spent()
    await asyncio.wait_for(expired(), 120)  # downed when its time ended: its seconds since too

    async def more() -> None:
        while await spent() <= before:
            await asyncio.sleep(0.2)

    await asyncio.wait_for(more(), 90)
    assert await spent() - before < 0.5  # its last minute, not its half hour again


def _maybe(settings: Settings, run_id: str, stage: str) -> str:
    path = settings.logs_dir / run_id / f"{stage}.log"
    return path.read_text() if path.exists() else ""
