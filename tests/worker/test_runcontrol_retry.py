"""RunControl.retry end to end: the local backend and a real Temporal dev server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runs import clusters_left, head, request_for, wait_finished
from worker.contract import RunState, StageState
from worker.coordinator import lane_workflow_id
from worker.links import Links
from worker.retry import RetryRefused
from worker.runcontrol import RunControl
from worker.settings import Settings

# preprocess writes its run's id into the bucket and counts its executions there; train counts
# too and leaves a model on its cluster only; eval fails on its first execution (a marker in the
# bucket), then checks it reads what preprocess wrote in the run retried (not in its own) and
# the model train left on the cluster.
RETRY_PIPELINE = {
    "prep.yaml": (
        "run: |\n"
        "  echo x >> $DATA_BUCKET_URL/preprocess.count\n"
        "  echo $SKYRUN_RUN_ID > $DATA_BUCKET_URL/data.txt\n"
        "  echo '::metric rows=100'\n"
        "  echo '::report'\n  echo 'prepared 100 rows'\n  echo '::endreport'\n"
    ),
    "train.yaml": (
        "run: |\n"
        "  echo x >> $DATA_BUCKET_URL/train.count\n"
        "  echo trained > $HOME/model.txt\n"
        "  echo '::metric loss=0.5'\n"
    ),
    "eval.yaml": (
        "run: |\n"
        "  test -s $HOME/model.txt || { echo 'no model on this cluster'; exit 6; }\n"
        "  if [ ! -f $DATA_BUCKET_URL/eval.tried ]; then\n"
        "    touch $DATA_BUCKET_URL/eval.tried; echo 'flaky eval'; exit 4\n"
        "  fi\n"
        "  data=$(cat $DATA_BUCKET_URL/data.txt)\n"
        '  [ -n "$data" ] && [ "$data" != "$SKYRUN_RUN_ID" ] || { echo "bad: $data"; exit 5; }\n'
        "  echo '::metric accuracy=0.9'\n"
    ),
    ".skyrun.yaml": (
        "stages:\n"
        "  - {name: preprocess, task: prep.yaml}\n"
        "  - {name: train, task: train.yaml, cluster: train}\n"
        "  - {name: eval, task: eval.yaml, cluster: train}\n"
    ),
}


def bucket_file(settings: Settings, name: str) -> Path:
    (path,) = (settings.data_path / "buckets").glob(f"*/{name}")
    return path


async def failed_run(control: RunControl, repo: Path) -> str:
    outcome = await control.start(request_for(repo, commit=head(repo), envs={"SEED": "7"}))
    progress = await wait_finished(control, outcome.run_id)
    assert progress.state is RunState.FAILED, progress.error
    assert progress.error == "stage 'eval' failed with exit status 4"
    return outcome.run_id


async def test_retry_reuses_preprocess_reruns_train_on_eval_s_cluster_and_succeeds(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(RETRY_PIPELINE)
    first = await failed_run(control, repo)

    outcome = await control.retry(first, requested_by="retrier")
    assert outcome.started and outcome.run_id == f"{first}-retry"
    assert outcome.plan.rerun == ["train", "eval"]
    progress = await wait_finished(control, outcome.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.retry_of == first
    assert progress.commit == head(repo) and progress.requested_by == "retrier"
    assert [s.name for s in progress.stages] == ["preprocess", "train", "eval"]
    assert all(s.state is StageState.SUCCEEDED for s in progress.stages)
    prep, train, evaluate = progress.stages
    assert prep.reused_from == first and prep.rerun_reason == ""
    assert prep.metrics == {"rows": 100.0} and "prepared 100 rows" in prep.report
    assert train.reused_from == "" and evaluate.reused_from == ""
    assert train.rerun_reason == "shares cluster train with eval, which failed"
    assert evaluate.rerun_reason == "it failed"
    assert [s.launched for s in progress.stages[1:]] == [True, False]
    assert progress.metrics == {"rows": 100.0, "loss": 0.5, "accuracy": 0.9}
    # preprocess did not run again; train did; eval read the original run's data.
    assert bucket_file(settings, "preprocess.count").read_text() == "x\n"
    assert bucket_file(settings, "train.count").read_text() == "x\nx\n"
    assert bucket_file(settings, "data.txt").read_text().strip() == first
    # The reused stage's log link is the original run's log, which exists; the retry has none.
    links = Links(settings)
    assert links.stage_log(progress.run_id, prep) == links.log(first, "preprocess")
    assert (settings.logs_dir / first / "preprocess.log").is_file()
    assert not (settings.logs_dir / progress.run_id / "preprocess.log").exists()
    assert (settings.logs_dir / progress.run_id / "eval.log").is_file()
    assert clusters_left(settings) == []
    # Same values as the run retried.
    request = await control.request_of(progress.run_id)
    assert request is not None and request.envs == {"SEED": "7"}
    assert request.retry_of == first and [s.name for s in request.reused] == ["preprocess"]

    # Retrying the same run again is the same retry: exactly once.
    again = await control.retry(first)
    assert not again.started and again.run_id == outcome.run_id
    # The retry succeeded: nothing to retry.
    with pytest.raises(RetryRefused, match="succeeded: every stage passed"):
        await control.retry(progress.run_id)


async def test_retry_refuses_unknown_and_running_runs_and_runs_without_stages(
    control: RunControl, git_repo: Callable[..., Path], gate: Path
) -> None:
    with pytest.raises(RetryRefused, match="was not found"):
        await control.retry("nothing-0123456789")
    repo = git_repo(
        {
            "wait.yaml": f"run: |\n  while [ ! -f {gate} ]; do sleep 0.1; done\n  exit 1\n",
            ".skyrun.yaml": "stages: [{name: slow, task: wait.yaml}]\n",
        }
    )
    running = await control.start(request_for(repo, commit=head(repo)))
    with pytest.raises(RetryRefused, match=r"is still (queued|running)"):
        await control.retry(running.run_id)
    gate.touch()
    assert (await wait_finished(control, running.run_id)).state is RunState.FAILED
    # A workflow that is no skyrun run (the lane's coordinator) is refused as such.
    request = request_for(repo)
    coordinator = lane_workflow_id(request.lane, control.task_queue)
    with pytest.raises(RetryRefused, match="is not a skyrun run"):
        await control.retry(coordinator)

    bad = git_repo({".skyrun.yaml": "stages:\n  - {name: a, task: missing.yaml}\n"}, name="bad")
    broken = await control.start(request_for(bad, commit=head(bad)))
    assert (await wait_finished(control, broken.run_id)).state is RunState.FAILED
    with pytest.raises(RetryRefused, match=r"before any stage ran.*missing\.yaml"):
        await control.retry(broken.run_id)


async def test_a_retry_that_fails_again_is_retried_from_its_own_failed_stage(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    files = dict(RETRY_PIPELINE)
    # eval fails twice: its marker counts executions.
    files["eval.yaml"] = (
        "run: |\n"
        "  echo x >> $DATA_BUCKET_URL/eval.count\n"
        '  echo "$SKYRUN_RUN_ID $SKYRUN_DATA_KEY" >> $DATA_BUCKET_URL/eval.keys\n'
        "  [ $(wc -l < $DATA_BUCKET_URL/eval.count) -ge 3 ] || exit 4\n"
    )
    files[".skyrun.yaml"] = (
        "stages:\n"
        "  - {name: preprocess, task: prep.yaml}\n"
        "  - {name: train, task: train.yaml}\n"
        "  - {name: eval, task: eval.yaml}\n"
    )
    repo = git_repo(files)
    first = (await control.start(request_for(repo, commit=head(repo)))).run_id
    assert (await wait_finished(control, first)).state is RunState.FAILED
    # Two retries asked at once start one run.
    second, twin = await asyncio.gather(control.retry(first), control.retry(first))
    assert sorted([second.started, twin.started]) == [False, True]
    assert second.run_id == twin.run_id == f"{first}-retry"
    # Every stage has its own cluster here: only eval runs again.
    assert second.plan.rerun == ["eval"]
    again = await wait_finished(control, second.run_id)
    assert again.state is RunState.FAILED
    assert [s.reused_from for s in again.stages] == [first, first, ""]
    third = await control.retry(second.run_id)
    assert third.run_id == f"{first}-retry2"
    final = await wait_finished(control, third.run_id)
    assert final.state is RunState.SUCCEEDED, final.error
    # Reused twice: still from the run that executed it.
    assert [s.reused_from for s in final.stages] == [first, first, ""]
    assert bucket_file(settings, "train.count").read_text() == "x\n"
    assert bucket_file(settings, "eval.count").read_text() == "x\nx\nx\n"
    # Each retry's tasks find data where the first run filed it: under its data key.
    keys = bucket_file(settings, "eval.keys").read_text().splitlines()
    assert keys == [f"{first} {first}", f"{first}-retry {first}", f"{first}-retry2 {first}"]


# A diamond (stages as a DAG): one middle stage fails; its retry reuses the other branch and
# runs the failed stage and the join, which waits for it.
DIAMOND = {
    "prep.yaml": "run: |\n  echo x >> $DATA_BUCKET_URL/prep.count\n  echo '::metric rows=1'\n",
    "left.yaml": "run: |\n  echo x >> $DATA_BUCKET_URL/left.count\n",
    "right.yaml": (
        "run: |\n"
        "  [ -f $DATA_BUCKET_URL/right.tried ] || {\n"
        "    touch $DATA_BUCKET_URL/right.tried; until [ -s $DATA_BUCKET_URL/left.count ]; do\n"
        "      sleep 0.1; done; sleep 1; exit 3; }\n"
        "  echo x >> $DATA_BUCKET_URL/right.count\n"
    ),
    "join.yaml": (
        "run: |\n"
        "  test -s $DATA_BUCKET_URL/right.count || { echo 'right did not run first'; exit 5; }\n"
        "  echo '::metric accuracy=0.9'\n"
    ),
    ".skyrun.yaml": (
        "stages:\n"
        "  - {name: prep, task: prep.yaml}\n"
        "  - {name: left, task: left.yaml, needs: [prep]}\n"
        "  - {name: right, task: right.yaml, needs: [prep]}\n"
        "  - {name: join, task: join.yaml, needs: [left, right]}\n"
    ),
}


async def test_a_dag_retry_reuses_the_branch_that_succeeded_and_joins_after_the_rerun(
    control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo(DIAMOND)
    outcome = await control.start(request_for(repo, commit=head(repo)))
    first = await wait_finished(control, outcome.run_id)
    assert first.state is RunState.FAILED
    states = {s.name: s.state for s in first.stages}
    assert states["right"] is StageState.FAILED and states["join"] is StageState.SKIPPED

    retry = await control.retry(outcome.run_id, requested_by="retrier")
    progress = await wait_finished(control, retry.run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    by_name = {s.name: s for s in progress.stages}
    assert by_name["prep"].reused_from == outcome.run_id
    assert by_name["prep"].metrics == {"rows": 1.0}
    assert by_name["join"].metrics == {"accuracy": 0.9}
    assert not by_name["right"].reused_from and not by_name["join"].reused_from
    assert bucket_file(settings, "prep.count").read_text() == "x\n"
    assert bucket_file(settings, "right.count").read_text() == "x\n"
    # left finished before right failed (right waits for it): reused, not run again.
    assert by_name["left"].reused_from == outcome.run_id
    assert bucket_file(settings, "left.count").read_text() == "x\n"
    assert clusters_left(settings) == []
