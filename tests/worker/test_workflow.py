"""The pipeline workflow end to end on a real Temporal dev server with the local backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError

from tests.runs import (
    SLOW_TASK,
    alive,
    clusters_left,
    head,
    request_for,
    wait_finished,
    wait_pidfile,
    wait_stage_running,
)
from worker.contract import RunState, StageState, Trigger, Verdict
from worker.models import StageInput, StageOutput
from worker.runcontrol import RunControl
from worker.settings import Settings


async def test_example_pipeline_runs_all_stages_and_shares_the_train_cluster(
    control: RunControl,
    settings: Settings,
    git_repo: Callable[..., Path],
    example_files: dict[str, str],
) -> None:
    repo = git_repo(example_files)
    outcome = await control.start(request_for(repo))
    assert outcome.started
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert [s.name for s in progress.stages] == ["preprocess", "train", "eval"]
    assert all(s.state is StageState.SUCCEEDED for s in progress.stages)
    assert [s.cluster for s in progress.stages] == ["preprocess", "train", "train"]
    assert [s.launched for s in progress.stages] == [True, True, False]
    assert 0.8 < progress.metrics["accuracy"] <= 1.0
    assert progress.metrics["accuracy_pct"] == pytest.approx(progress.metrics["accuracy"] * 100)
    assert "| test |" in progress.stages[2].report
    assert len(progress.commit) == 40
    for stage in ("preprocess", "train", "eval"):
        log = (settings.logs_dir / outcome.run_id / f"{stage}.log").read_text()
        assert f"[skyrun] stage {stage}" in log
    assert "epoch 20/20" in (settings.logs_dir / outcome.run_id / "train.log").read_text()
    assert clusters_left(settings) == []
    assert progress.clusters_up == []
    assert not (settings.data_path / "checkouts" / outcome.run_id).exists()


async def test_failing_stage_fails_the_run_names_it_and_leaves_no_cluster(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "a.yaml": "run: echo preparing\n",
            "b.yaml": "run: |\n  echo about to fail\n  echo 'Traceback: boom' >&2\n  exit 3\n",
            "c.yaml": "run: echo never\n",
            ".skyrun.yaml": (
                "stages:\n  - {name: a, task: a.yaml}\n"
                "  - {name: b, task: b.yaml, cluster: shared}\n"
                "  - {name: c, task: c.yaml, cluster: shared}\n"
            ),
        }
    )
    outcome = await control.start(request_for(repo))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.FAILED
    assert progress.error == "stage 'b' failed with exit status 3"
    states = {s.name: s.state for s in progress.stages}
    assert states == {"a": StageState.SUCCEEDED, "b": StageState.FAILED, "c": StageState.SKIPPED}
    failed = progress.failed_stage
    assert failed is not None and failed.exit_code == 3
    assert any("Traceback: boom" in line for line in failed.log_tail)
    assert clusters_left(settings) == []
    with pytest.raises(WorkflowFailureError):
        await control.client.get_workflow_handle(outcome.run_id).result()


async def test_bad_pipeline_file_fails_clearly_and_launches_nothing(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({".skyrun.yaml": "stages:\n  - name: a\n    task: missing.yaml\n"})
    outcome = await control.start(request_for(repo))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.FAILED
    assert ".skyrun.yaml:3" in progress.error and "missing.yaml" in progress.error
    assert progress.stages == []
    assert clusters_left(settings) == []


@pytest.mark.host_processes
async def test_cancel_in_the_middle_of_a_stage_kills_the_job_and_downs_the_cluster(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "job.pid"
    repo = git_repo(
        {
            "train.yaml": SLOW_TASK.format(pidfile=pidfile),
            ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\n",
        }
    )
    outcome = await control.start(request_for(repo))
    child = await wait_pidfile(Path(f"{pidfile}.child"))
    assert alive(child)
    assert clusters_left(settings) != []

    assert await control.cancel(outcome.run_id)
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.CANCELLED
    assert progress.stages[0].state is StageState.CANCELLED
    assert not alive(child)
    assert clusters_left(settings) == []


async def test_same_work_twice_starts_one_run(
    control: RunControl, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "job.pid"
    repo = git_repo(
        {
            "train.yaml": SLOW_TASK.format(pidfile=pidfile),
            ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\n",
        }
    )
    commit = (repo / ".git" / "refs" / "heads" / "main").read_text().strip()
    first = await control.start(request_for(repo, commit=commit))
    second = await control.start(request_for(repo, commit=commit))
    assert first.started and not second.started
    assert first.run_id == second.run_id

    redelivered = await control.start(request_for(repo, delivery_id="d-1", ref="other"))
    again = await control.start(request_for(repo, delivery_id="d-1", ref="other"))
    assert redelivered.started and not again.started
    await control.cancel(first.run_id)
    await control.cancel(redelivered.run_id)
    await wait_finished(control, first.run_id)


async def test_a_run_cancelled_while_it_enters_its_lane_ends_cancelled(
    control: RunControl, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    # The cancel lands while the run's signal to its lane's coordinator is in flight (the same
    # moment the coordinator, told of a newer request, cancels it too): it used to be consumed by
    # that activity, and the run then waited forever for an admission nobody would send.
    for attempt in range(5):
        repo = git_repo(
            {
                "train.yaml": SLOW_TASK.format(pidfile=tmp_path / f"job{attempt}.pid"),
                ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\n",
            }
        )
        first = await control.start(request_for(repo, commit=head(repo)))
        newer = await control.start(request_for(repo, delivery_id=f"d-{attempt}", ref="other"))
        await control.cancel(first.run_id)
        await control.cancel(newer.run_id)
        progress = await wait_finished(control, first.run_id, timeout=60)
        assert progress.state is RunState.CANCELLED, (attempt, progress.error)


@pytest.mark.host_processes
async def test_newer_run_in_the_lane_supersedes_the_running_one(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "job.pid"
    pipeline = ".skyrun.yaml"
    repo = git_repo(
        {
            "train.yaml": SLOW_TASK.format(pidfile=pidfile),
            pipeline: "stages: [{name: train, task: train.yaml}]\n",
        }
    )
    first = await control.start(request_for(repo, commit=head(repo)))
    child = await wait_pidfile(Path(f"{pidfile}.child"))

    git_repo({"train.yaml": "run: echo second run\n"})
    second = await control.start(request_for(repo, commit=head(repo)))
    assert second.started and second.superseded == [first.run_id]

    old = await wait_finished(control, first.run_id)
    new = await wait_finished(control, second.run_id)
    assert old.state is RunState.CANCELLED
    assert new.state is RunState.SUCCEEDED
    assert not alive(child)
    # The new run waited for the old one to close before it spent compute.
    assert new.stages[0].started_at >= old.finished_at
    assert clusters_left(settings) == []


async def test_push_to_an_unwatched_branch_ends_quietly_as_skipped(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "a.yaml": "run: echo hi\n",
            ".skyrun.yaml": "on: {push: ['release/*']}\nstages: [{name: a, task: a.yaml}]\n",
        }
    )
    skipped = await control.start(
        request_for(
            repo, trigger=Trigger.PUSH, ref="main", commit=head(repo), check_push_filter=True
        )
    )
    progress = await wait_finished(control, skipped.run_id)
    assert progress.state is RunState.SKIPPED
    assert "not watched" in progress.error
    assert progress.stages == []


@pytest.mark.host_processes
async def test_run_past_its_timeout_is_stopped_and_torn_down(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "job.pid"
    repo = git_repo(
        {
            "train.yaml": SLOW_TASK.format(pidfile=pidfile),
            ".skyrun.yaml": "timeout_minutes: 1\nstages: [{name: train, task: train.yaml}]\n",
        }
    )
    outcome = await control.start(request_for(repo))
    child = await wait_pidfile(Path(f"{pidfile}.child"))
    progress = await wait_finished(control, outcome.run_id, timeout=150)

    assert progress.state is RunState.TIMED_OUT
    assert progress.error == "the run exceeded timeout_minutes (1 min) during stage 'train'"
    assert progress.stages[0].state is StageState.FAILED
    assert not alive(child)
    assert clusters_left(settings) == []


async def test_cancel_landing_as_a_short_stage_finishes_still_stops_the_run(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(
        {
            "a.yaml": "run: sleep 0.3\n",
            "b.yaml": "run: sleep 300\n",
            ".skyrun.yaml": "stages: [{name: a, task: a.yaml}, {name: b, task: b.yaml}]\n",
        }
    )
    outcome = await control.start(request_for(repo))
    await wait_stage_running(control, outcome.run_id, "a")
    await asyncio.sleep(0.2)
    assert await control.cancel(outcome.run_id)
    progress = await wait_finished(control, outcome.run_id, timeout=60)
    assert progress.state is RunState.CANCELLED
    assert progress.stages[1].state in (StageState.SKIPPED, StageState.CANCELLED)
    assert clusters_left(settings) == []


async def test_gates_that_cannot_be_decided_fail_the_verdict_not_the_run(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    from worker.activities import NO_BASELINE_CLIENT, PipelineActivities
    from worker.backends.local import LocalBackend
    from worker.process import build_workers, running_workers

    repo = git_repo(
        {
            ".skyrun.yaml": "stages:\n  - {name: a, task: a.yaml}\n"
            "gates:\n  - accuracy >= 0.5\n  - accuracy >= base\n",
            "a.yaml": "run: echo '::metric accuracy=0.9'\n",
        }
    )
    # A worker without a Temporal client cannot look for the baseline: fail closed.
    blind = PipelineActivities(settings, LocalBackend.from_settings(settings), client=None)
    async with running_workers(build_workers(client, settings, activities=blind)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(repo))
        progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.verdict is Verdict.FAILED
    assert [g.expr for g in progress.gates] == ["accuracy >= 0.5", "accuracy >= base"]
    assert not any(g.passed for g in progress.gates)
    assert all(NO_BASELINE_CLIENT in g.note for g in progress.gates)
    assert clusters_left(settings) == []


async def test_a_run_with_gates_replays_on_todays_code(
    client: Client, control: RunControl, git_repo: Callable[..., Path]
) -> None:
    from temporalio.worker import Replayer

    from worker.workflow import PATCH_GATES, PipelineWorkflow

    repo = git_repo(
        {
            ".skyrun.yaml": "stages:\n  - {name: a, task: a.yaml}\ngates:\n  - accuracy >= 0.95\n",
            "a.yaml": "run: echo '::metric accuracy=0.93'\n",
        }
    )
    # No lane: the Replayer runs on a task queue of its own, so a lane's coordinator id (which
    # includes the task queue) would not match the recorded admission signal.
    outcome = await control.start(request_for(repo, lane=""))
    progress = await wait_finished(control, outcome.run_id)
    assert progress.state is RunState.SUCCEEDED and progress.verdict is Verdict.FAILED
    await client.get_workflow_handle(outcome.run_id).result()

    history = await client.get_workflow_handle(outcome.run_id).fetch_history()
    assert PATCH_GATES in history.to_json()  # the step is behind its patch marker
    result = await Replayer(workflows=[PipelineWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


# --- stages as a DAG (needs) ----------------------------------------------------------------

TIMED_TASK = """\
run: |
  echo "::metric start=$(date +%s.%N)"
  sleep {seconds}
  echo "::metric end=$(date +%s.%N)"
"""


def diamond(left: str, right: str, **extra: str) -> dict[str, str]:
    """A four-stage diamond: prep → left ∥ right → join, each on its own cluster."""
    return {
        "prep.yaml": TIMED_TASK.format(seconds=0),
        "left.yaml": left,
        "right.yaml": right,
        "join.yaml": TIMED_TASK.format(seconds=0),
        ".skyrun.yaml": extra.get("head", "") + "stages:\n  - {name: prep, task: prep.yaml}\n"
        "  - {name: left, task: left.yaml, needs: [prep]}\n"
        "  - {name: right, task: right.yaml, needs: [prep]}\n"
        "  - {name: join, task: join.yaml, needs: [left, right]}\n",
    }


async def test_a_diamond_runs_its_middle_stages_at_once_and_the_join_waits_for_both(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(diamond(TIMED_TASK.format(seconds=3), TIMED_TASK.format(seconds=1.5)))
    outcome = await control.start(request_for(repo))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    stages = {s.name: s for s in progress.stages}
    assert all(s.state is StageState.SUCCEEDED for s in progress.stages)
    assert {name: s.needs for name, s in stages.items()} == {
        "prep": [],
        "left": ["prep"],
        "right": ["prep"],
        "join": ["left", "right"],
    }
    left, right, prep, join = (stages[n].metrics for n in ("left", "right", "prep", "join"))
    # The jobs' own clocks: the middle stages overlap, and each started after prep ended.
    assert left["start"] < right["end"] and right["start"] < left["end"]
    assert min(left["start"], right["start"]) >= prep["end"]
    # The join started after the slower middle stage ended, not after the first one.
    assert join["start"] >= max(left["end"], right["end"]) > min(left["end"], right["end"])
    assert stages["join"].started_at >= max(stages["left"].finished_at, stages["right"].finished_at)
    assert all(s.launched for s in progress.stages)
    assert clusters_left(settings) == []
    assert progress.clusters_up == []


@pytest.mark.host_processes
async def test_a_failing_middle_stage_cancels_the_other_and_skips_the_join(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "right.pid"
    failing = "run: |\n  until [ -s {pid}.child ]; do sleep 0.1; done\n  exit 3\n"
    repo = git_repo(diamond(failing.format(pid=pidfile), SLOW_TASK.format(pidfile=pidfile)))
    outcome = await control.start(request_for(repo))
    child = await wait_pidfile(Path(f"{pidfile}.child"))
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.FAILED
    assert progress.error == "stage 'left' failed with exit status 3"
    states = {s.name: s.state for s in progress.stages}
    assert states == {
        "prep": StageState.SUCCEEDED,
        "left": StageState.FAILED,
        "right": StageState.CANCELLED,
        "join": StageState.SKIPPED,
    }
    right = progress.stages[2]
    assert right.error == "stage 'right' was cancelled because stage 'left' failed"
    assert not alive(child)
    assert clusters_left(settings) == []


@pytest.mark.host_processes
async def test_cancel_during_parallel_stages_kills_both_jobs_and_leaves_no_cluster(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    left_pid, right_pid = tmp_path / "left.pid", tmp_path / "right.pid"
    repo = git_repo(
        diamond(SLOW_TASK.format(pidfile=left_pid), SLOW_TASK.format(pidfile=right_pid))
    )
    outcome = await control.start(request_for(repo))
    children = [await wait_pidfile(Path(f"{pid}.child")) for pid in (left_pid, right_pid)]
    assert all(alive(child) for child in children)
    up = clusters_left(settings)
    assert not any("prep" in name for name in up)  # prep's cluster went down when it ended
    assert any("left" in name for name in up) and any("right" in name for name in up)

    assert await control.cancel(outcome.run_id)
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.CANCELLED
    states = {s.name: s.state for s in progress.stages}
    assert states == {
        "prep": StageState.SUCCEEDED,
        "left": StageState.CANCELLED,
        "right": StageState.CANCELLED,
        "join": StageState.SKIPPED,
    }
    assert progress.stages[1].error == "stage 'left' was cancelled"
    assert progress.stages[2].error == "stage 'right' was cancelled"
    assert not any(alive(child) for child in children)
    assert clusters_left(settings) == []


@pytest.mark.host_processes
async def test_timeout_during_parallel_stages_names_both_and_leaves_no_cluster(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    left_pid, right_pid = tmp_path / "left.pid", tmp_path / "right.pid"
    repo = git_repo(
        diamond(
            SLOW_TASK.format(pidfile=left_pid),
            SLOW_TASK.format(pidfile=right_pid),
            head="timeout_minutes: 1\n",
        )
    )
    outcome = await control.start(request_for(repo))
    children = [await wait_pidfile(Path(f"{pid}.child")) for pid in (left_pid, right_pid)]
    progress = await wait_finished(control, outcome.run_id, timeout=150)

    assert progress.state is RunState.TIMED_OUT
    assert progress.error == (
        "the run exceeded timeout_minutes (1 min) during stages 'left', 'right'"
    )
    states = [s.state for s in progress.stages]
    assert states == [
        StageState.SUCCEEDED,
        StageState.FAILED,
        StageState.FAILED,
        StageState.SKIPPED,
    ]
    assert not any(alive(child) for child in children)
    assert clusters_left(settings) == []


async def test_a_dag_run_replays_on_todays_code_behind_its_patch(
    client: Client, control: RunControl, git_repo: Callable[..., Path]
) -> None:
    from temporalio.worker import Replayer

    from worker.workflow import PATCH_DAG, PipelineWorkflow

    repo = git_repo(diamond(TIMED_TASK.format(seconds=0), TIMED_TASK.format(seconds=0)))
    outcome = await control.start(request_for(repo, lane=""))
    progress = await wait_finished(control, outcome.run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error

    history = await client.get_workflow_handle(outcome.run_id).fetch_history()
    markers = [
        str(event.marker_recorded_event_attributes)
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
    ]
    assert any(f'\\"{PATCH_DAG}\\"' in marker for marker in markers), markers
    result = await Replayer(workflows=[PipelineWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


@pytest.mark.host_processes
async def test_a_stage_whose_activity_fails_for_good_cancels_the_others_first(
    client: Client, settings: Settings, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    from temporalio.exceptions import ApplicationError

    from worker.activities import PipelineActivities
    from worker.backends.local import LocalBackend
    from worker.process import build_workers, running_workers

    pidfile = tmp_path / "right.pid"

    class LeftBreaks(PipelineActivities):
        """`left` fails as a backend would after its retries: an error, not an exit status."""

        @activity.defn(name="run_stage")
        async def run_stage(self, data: StageInput) -> StageOutput:
            if data.stage.name == "left":
                await wait_pidfile(Path(f"{pidfile}.child"))
                raise ApplicationError("the cloud said no", non_retryable=True)
            return await super().run_stage(data)

    repo = git_repo(diamond(TIMED_TASK.format(seconds=0), SLOW_TASK.format(pidfile=pidfile)))
    acts = LeftBreaks(settings, LocalBackend.from_settings(settings), client=client)
    async with running_workers(build_workers(client, settings, activities=acts)):
        control = RunControl(client, settings.temporal_task_queue)
        outcome = await control.start(request_for(repo))
        child = await wait_pidfile(Path(f"{pidfile}.child"))
        progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.FAILED
    assert progress.error == "the cloud said no"
    states = {s.name: s.state for s in progress.stages}
    assert states == {
        "prep": StageState.SUCCEEDED,
        "left": StageState.FAILED,
        "right": StageState.CANCELLED,
        "join": StageState.SKIPPED,
    }
    assert not alive(child)
    assert clusters_left(settings) == []
