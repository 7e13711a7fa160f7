"""Just-in-time provisioning (issue 12): a stage's fresh cluster is launched with its setup while
the stages it needs still run, on a real Temporal dev server with the local backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Replayer

from tests.runs import clusters_left, head, request_for, wait_finished
from worker.contract import RunProgress, RunState, StageState
from worker.runcontrol import RunControl
from worker.settings import Settings
from worker.workflow import PATCH_PRELAUNCH, PipelineWorkflow

# The first stage takes a while; the second's setup notes when it ran (into the lane's bucket,
# which both stages share), and its job reports that time with its own start.
FIRST = """\
run: |
  echo "::metric start=$(date +%s.%N)"
  sleep {seconds}
  echo "::metric end=$(date +%s.%N)"
"""
SECOND = """\
setup: |
  echo setting up
  {setup}
  date +%s.%N > "$DATA_BUCKET_URL/setup-at"
run: |
  echo "::metric setup_at=$(cat "$DATA_BUCKET_URL/setup-at")"
  echo "::metric start=$(date +%s.%N)"
"""


def pipeline(second_setup: str = "true", seconds: float = 3, prelaunch: str = "") -> dict[str, str]:
    extra = f", prelaunch: {prelaunch}" if prelaunch else ""
    return {
        "first.yaml": FIRST.format(seconds=seconds),
        "second.yaml": SECOND.format(setup=second_setup),
        ".skyrun.yaml": "stages:\n  - {name: first, task: first.yaml}\n"
        f"  - {{name: second, task: second.yaml{extra}}}\n",
    }


async def test_the_next_stages_cluster_is_provisioned_while_the_first_stage_runs(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    outcome = await control.start(request_for(git_repo(pipeline())))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    first, second = progress.stages
    # Its setup ran before the first stage's job ended; its job only after.
    assert second.metrics["setup_at"] < first.metrics["end"]
    assert second.metrics["start"] >= first.metrics["end"]
    assert second.provision_started_at < first.finished_at
    assert second.provision_started_at <= second.provision_finished_at <= second.job_started_at
    # Its setup's start, for the timeline: after the launch began, before provisioning ended.
    provisioning = datetime.fromisoformat(second.provision_finished_at) - datetime.fromisoformat(
        second.provision_started_at
    )
    assert second.provision_setup_s is not None
    assert 0 < second.provision_setup_s < provisioning.total_seconds()
    assert first.setup_s is None  # no setup: nothing to draw
    assert second.job_started_at >= first.finished_at
    assert second.provision_failed == "" and second.launched
    assert first.provision_started_at == ""  # it starts with the run: nothing to hide
    log = (settings.logs_dir / outcome.run_id / "second.log").read_text()
    assert "provisioning cluster second ahead of the stages it needs" in log
    assert "job on cluster second, provisioned ahead of time" in log
    assert log.count("setting up") == 1  # setup ran once, when provisioning
    cluster = next(c for c in progress.clusters if c.cluster == "second")
    assert cluster.provision_s > 0
    assert clusters_left(settings) == [] and progress.clusters_up == []


async def test_prelaunch_false_waits_for_the_needs(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    outcome = await control.start(request_for(git_repo(pipeline(seconds=1, prelaunch="false"))))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    first, second = progress.stages
    assert second.metrics["setup_at"] >= first.metrics["end"]
    assert second.provision_started_at == ""
    assert clusters_left(settings) == []


async def test_a_failed_provisioning_is_launched_again_at_stage_time(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    # The setup fails the first time (no marker yet) and succeeds the second.
    flaky = 'if [ ! -e "$DATA_BUCKET_URL/tried" ]; then touch "$DATA_BUCKET_URL/tried"; exit 7; fi'
    outcome = await control.start(request_for(git_repo(pipeline(second_setup=flaky, seconds=1))))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    first, second = progress.stages
    assert second.provision_failed == (
        "provisioning ahead of time failed (setup exited with status 7); launched at stage time"
    )
    assert second.metrics["setup_at"] >= first.metrics["end"]  # the second setup, at stage time
    log = (settings.logs_dir / outcome.run_id / "second.log").read_text()
    assert "provisioned (setup exited with status 7)" in log
    assert "stage second: launch second.yaml on cluster second" in log
    assert clusters_left(settings) == []


async def test_a_failing_first_stage_downs_the_cluster_provisioned_for_the_next(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    files = pipeline(second_setup="sleep 1")
    files["first.yaml"] = "run: |\n  sleep 2\n  exit 4\n"
    outcome = await control.start(request_for(git_repo(files)))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.FAILED
    first, second = progress.stages
    assert (first.state, second.state) == (StageState.FAILED, StageState.SKIPPED)
    assert second.provision_started_at and second.provision_finished_at
    assert clusters_left(settings) == [] and progress.clusters_up == []
    assert all(c.down_at for c in progress.clusters)


async def test_cancel_while_provisioning_stops_the_setup_and_leaves_no_cluster(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    files = pipeline(second_setup='touch "$DATA_BUCKET_URL/setup-began"; sleep 300', seconds=300)
    outcome = await control.start(request_for(git_repo(files)))

    async def provisioning() -> None:
        while True:
            progress = await control.progress(outcome.run_id)
            if progress and progress.stages and progress.stages[1].provision_started_at:
                logs = settings.logs_dir / outcome.run_id / "second.log"
                if logs.exists() and "(setup pid=" in logs.read_text():
                    return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(provisioning(), 60)
    await control.cancel(outcome.run_id)
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.CANCELLED
    assert [s.state for s in progress.stages] == [StageState.CANCELLED, StageState.SKIPPED]
    assert clusters_left(settings) == [] and progress.clusters_up == []
    assert all(c.down_at for c in progress.clusters)


async def test_a_prelaunched_run_replays_on_todays_code_behind_its_patch(
    control: RunControl, client: Client, git_repo: Callable[..., Path]
) -> None:
    # No lane: the Replayer's own task queue would not match a lane coordinator's id.
    outcome = await control.start(request_for(git_repo(pipeline(seconds=1)), lane=""))
    progress = await wait_finished(control, outcome.run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    await client.get_workflow_handle(outcome.run_id).result()

    history = await client.get_workflow_handle(outcome.run_id).fetch_history()
    markers = [
        json.loads(payload.data)["id"]
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        for details in event.marker_recorded_event_attributes.details.values()
        for payload in details.payloads
    ]
    assert PATCH_PRELAUNCH in markers
    result = await Replayer(workflows=[PipelineWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


async def test_the_lanes_last_run_times_provisioning_so_the_cluster_idles_little(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(pipeline(seconds=12))
    first = await wait_finished(control, (await control.start(request_for(repo))).run_id)
    assert first.state is RunState.SUCCEEDED, first.error
    git_repo({"NOTES.md": "next commit\n"})  # the lane's next run, of a new commit
    outcome = await control.start(request_for(repo, commit=head(repo)))
    second = await wait_finished(control, outcome.run_id)

    assert second.state is RunState.SUCCEEDED, second.error
    began = datetime.fromisoformat(second.stages[0].started_at)

    def after(run: RunProgress) -> float:
        return (datetime.fromisoformat(run.stages[1].provision_started_at) - began).total_seconds()

    # Without history it started with the run; now it waits until about its launch time (a
    # second or so here) plus a margin before the first stage's 12 s are up.
    first_began = datetime.fromisoformat(first.stages[0].started_at)
    first_at = datetime.fromisoformat(first.stages[1].provision_started_at)
    assert (first_at - first_began).total_seconds() < 2
    assert 3 < after(second) < 12
    # And it was still ready in time: the job started as soon as the first stage ended.
    ready = datetime.fromisoformat(second.stages[1].provision_finished_at)
    assert ready <= datetime.fromisoformat(second.stages[0].finished_at)
    assert second.stages[1].metrics["setup_at"] < second.stages[0].metrics["end"]
