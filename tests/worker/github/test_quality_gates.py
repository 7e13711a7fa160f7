"""Quality gates end to end: `gates:` in the pipeline file, decided by the real worker after the
stages, shown on the fake GitHub (check run, PR comment) and in the run's API JSON."""

from __future__ import annotations

from typing import Any

from tests.worker.github.stack import PIPELINE, Stack, unique_repo
from worker.contract import GateResult, RunState, StageState, Verdict
from worker.gates import NOTE_NO_BASELINE, NOTE_NOT_REPORTED
from worker.github import texts


def with_gates(*gates: str, train: str = PIPELINE["train.yaml"]) -> dict[str, str]:
    listed = "".join(f"  - {gate}\n" for gate in gates)
    return {
        **PIPELINE,
        ".skyrun.yaml": PIPELINE[".skyrun.yaml"] + "gates:\n" + listed,
        "train.yaml": train,
    }


def metrics_task(**metrics: float) -> str:
    lines = "".join(f"  echo '::metric {name}={value}'\n" for name, value in metrics.items())
    return "run: |\n  echo training\n" + lines


async def comment_run(stack: Stack, repo: str, branch: str) -> tuple[str, str, int]:
    """A `/skyrun` comment on a pull request of `branch`: the run id, its commit, the PR."""
    pull = stack.fake.open_pull(repo, branch, user="acme")
    result = await stack.command(stack.fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    assert result.outcome == "started", result
    return result.run_ids[0], result.commit, pull.number


async def api(stack: Stack, run_id: str) -> dict[str, Any]:
    response = await stack.http.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def body_of(stack: Stack, repo: str, number: int) -> str:
    (comment,) = stack.fake.bot_comments(repo, number)
    return comment.body


async def test_a_failed_gate_turns_the_check_red_while_every_stage_succeeded(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {"README.md": "hi"})
    fake.commit(
        repo,
        with_gates("accuracy >= 95", "loss <= 0.5", train=metrics_task(accuracy=93, loss=0.2)),
        branch="feature",
    )

    run_id, sha, number = await comment_run(stack, repo, "feature")
    progress = await stack.finished(run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert [s.state for s in progress.stages] == [StageState.SUCCEEDED] * 2
    assert progress.verdict is Verdict.FAILED
    assert progress.gates == [
        GateResult("accuracy >= 95", False, 93, 95, ""),
        GateResult("loss <= 0.5", True, 0.2, 0.5, ""),
    ]
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["status"] == "completed" and check.data["conclusion"] == "failure"
    assert check.data["output"]["title"] == "gate failed: accuracy 93 < 95"
    summary = check.data["output"]["summary"]
    assert "| `accuracy >= 95` | ❌ failed | 93 | 95 | — |" in summary
    assert "| `loss <= 0.5` | ✅ passed | 0.2 | 0.5 | — |" in summary
    assert "| `train` | ✅ succeeded |" in summary
    assert (
        texts.GATES_FAILED_HEADING.format(summary="accuracy 93 < 95")
        in check.data["output"]["text"]
    )
    body = body_of(stack, repo, number)
    assert f"❌ skyrun run [`{run_id}`]" in body and texts.GATES_FAILED_WORDS in body
    assert "| `accuracy >= 95` | ❌ failed | 93 | 95 | — |" in body
    assert texts.GATES_FAILED_NEXT in body

    data = await api(stack, run_id)
    assert data["state"] == "succeeded" and data["verdict"] == "failed"
    assert data["gates"] == [
        {"expr": "accuracy >= 95", "passed": False, "value": 93, "threshold": 95, "note": ""},
        {"expr": "loss <= 0.5", "passed": True, "value": 0.2, "threshold": 0.5, "note": ""},
    ]
    page = (await stack.http.get(f"/runs/{run_id}")).text
    assert 'data-verdict="failed"' in page and "accuracy 93 &lt; 95" in page


async def test_base_gates_compare_a_pull_request_with_the_last_good_run_of_main(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    gates = ("accuracy >= base - 0.01", "loss <= base")
    fake.add_repo(repo, with_gates(*gates, train=metrics_task(accuracy=0.8, loss=0.5)))
    base_sha = fake.head(repo)

    # The first run of main has no baseline: its base gates pass, saying so.
    base_run = await stack.push(repo, "main", base_sha)
    first = await stack.finished(base_run)
    assert first.state is RunState.SUCCEEDED and first.verdict is Verdict.PASSED
    assert [(g.passed, g.threshold, g.note) for g in first.gates] == [
        (True, None, NOTE_NO_BASELINE),
        (True, None, NOTE_NO_BASELINE),
    ]
    (base_check,) = fake.check_runs_for(repo, base_sha)
    assert base_check.data["conclusion"] == "success"
    assert base_check.data["output"]["title"] == texts.CHECK_TITLE_GATES_PASSED.format(
        count=2, gates=2
    )
    assert (
        f"| `loss <= base` | ✅ passed | 0.5 | — | {NOTE_NO_BASELINE} |"
        in (base_check.data["output"]["summary"])
    )

    fake.commit(repo, {"train.yaml": metrics_task(accuracy=0.78, loss=0.4)}, branch="worse")
    run_id, sha, number = await comment_run(stack, repo, "worse")
    progress = await stack.finished(run_id)

    assert progress.state is RunState.SUCCEEDED and progress.verdict is Verdict.FAILED
    assert progress.gates == [
        GateResult("accuracy >= base - 0.01", False, 0.78, 0.79, ""),
        GateResult("loss <= base", True, 0.4, 0.5, ""),
    ]
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["conclusion"] == "failure"
    assert check.data["output"]["title"] == "gate failed: accuracy 0.78 < 0.79"
    body = body_of(stack, repo, number)
    assert "| `accuracy >= base - 0.01` | ❌ failed | 0.78 | 0.79 | — |" in body
    # The metrics table compares with the same run the gates did.
    assert f"[`main`](http://skyrun.test/runs/{base_run})" in body
    data = await api(stack, run_id)
    assert data["baseline"]["run_id"] == base_run and data["verdict"] == "failed"

    fake.commit(repo, {"train.yaml": metrics_task(accuracy=0.795, loss=0.5)}, branch="fine")
    fine_id, fine_sha, _ = await comment_run(stack, repo, "fine")
    fine = await stack.finished(fine_id)
    assert fine.verdict is Verdict.PASSED, fine.gates
    assert fake.check_runs_for(repo, fine_sha)[0].data["conclusion"] == "success"


async def test_a_gate_on_a_metric_the_run_did_not_report_fails_and_says_so(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, with_gates("f1 >= 0.5", "f1 >= base"))
    sha = fake.head(repo)

    progress = await stack.finished(await stack.push(repo, "main", sha))

    assert progress.state is RunState.SUCCEEDED and progress.verdict is Verdict.FAILED
    note = NOTE_NOT_REPORTED.format(name="f1")
    assert progress.gates == [
        GateResult("f1 >= 0.5", False, None, 0.5, note),
        GateResult("f1 >= base", False, None, None, note),
    ]
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["conclusion"] == "failure"
    assert check.data["output"]["title"] == "gate failed: f1 not reported (and 1 more)"
    assert f"| `f1 >= 0.5` | ❌ failed | — | 0.5 | {note} |" in check.data["output"]["summary"]


async def test_a_bad_gate_is_a_pipeline_error_at_its_own_line_and_nothing_runs(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {"README.md": "hi"})
    fake.commit(repo, with_gates("accuracy >= 0.5", "accuracy => 0.9"), branch="typo")

    run_id, sha, number = await comment_run(stack, repo, "typo")
    progress = await stack.finished(run_id)

    assert progress.state is RunState.FAILED and progress.stages == []
    assert progress.verdict is Verdict.NONE and progress.gates == []
    # Lines 1-4 are on: and stages:, 5 is "gates:", 6 and 7 the gates.
    assert ".skyrun.yaml:7: gates[1]: cannot read gate 'accuracy => 0.9'" in progress.error
    assert "cannot read gate 'accuracy => 0.9'" in body_of(stack, repo, number)
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["conclusion"] == "failure"


async def test_a_run_without_gates_has_no_verdict_and_a_failed_stage_decides_none(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    plain = await stack.finished(await stack.push(repo, "main", fake.head(repo)))
    assert plain.state is RunState.SUCCEEDED and plain.verdict is Verdict.NONE
    data = await api(stack, plain.run_id)
    assert data["verdict"] == "none" and data["gates"] == []

    sha = fake.commit(repo, with_gates("accuracy >= 0", train="run: exit 4\n"))
    failed = await stack.finished(await stack.push(repo, "main", sha))
    assert failed.state is RunState.FAILED and failed.verdict is Verdict.NONE
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["conclusion"] == "failure"
    assert check.data["output"]["title"] == "Stage train failed"
