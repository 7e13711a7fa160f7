"""The Markdown skyrun posts: pure functions over a run's progress."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.baseline import Baseline
from worker.commands import COMMENT_USAGE, CommandKind
from worker.contract import (
    GateResult,
    GitHubTarget,
    InfraCause,
    RunProgress,
    RunRequest,
    RunState,
    StageProgress,
    StageState,
    Trigger,
    Verdict,
)
from worker.github import render, texts
from worker.github.contract import GitHubCommand
from worker.github.models import ReplyInput, ReplyKind
from worker.github.render import RunView
from worker.links import Links
from worker.masking import Masker
from worker.runcontrol import RunSummary
from worker.settings import load_settings

SHA = "0123456789abcdef0123456789abcdef01234567"
LINKS = Links(load_settings(_env_file=None, SKYRUN_PUBLIC_URL="https://skyrun.example"))


def view(state: RunState = RunState.SUCCEEDED, **progress_fields: object) -> RunView:
    stages = [
        StageProgress("prepare", "prepare", StageState.SUCCEEDED, duration_s=1.5, launched=True),
        StageProgress(
            "train",
            "train",
            StageState.SUCCEEDED,
            duration_s=754,
            launched=True,
            metrics={"accuracy": 0.9, "loss": 0.25},
            report="| split | acc |\n| --- | --- |\n| test | 0.9 |",
        ),
        StageProgress("eval", "train", StageState.SUCCEEDED, duration_s=3, launched=False),
    ]
    progress = RunProgress(
        run_id="ml-1",
        repo="acme/ml",
        ref="feature",
        commit=SHA,
        trigger=Trigger.COMMENT,
        requested_by="alice",
        state=state,
        stages=stages,
        started_at="2024-01-01T00:00:00+00:00",
        finished_at="2024-01-01T00:13:00+00:00" if state.finished else "",
    )
    for key, value in progress_fields.items():
        setattr(progress, key, value)
    request = RunRequest(
        repo="acme/ml",
        clone_url="https://github.com/acme/ml.git",
        trigger=Trigger.COMMENT,
        requested_by="alice",
        github=GitHubTarget(pr_number=3, base_branch="main", head_repo="acme/ml"),
    )
    return RunView(progress, request, LINKS, base_ref="main")


def test_a_warm_cluster_and_one_provisioned_ahead_are_named_after_the_cluster() -> None:
    run = view()
    run.progress.stages[0].cluster_reused_from = "ml-0"
    run.progress.stages[1].provision_finished_at = "2024-01-01T00:00:05+00:00"
    body = render.run_comment(run)
    assert (
        "| `prepare` | ✅ succeeded | 1.5 s | `prepare` (reused warm cluster from run ml-0) |"
        in body
    )
    assert "| `train` | ✅ succeeded | 12 min 34 s | `train` (cluster provisioned ahead) |" in body
    assert "| `eval` | ✅ succeeded | 3.0 s | `train` (shared) |" in body


def test_a_succeeded_run() -> None:
    body = render.run_comment(view())

    assert body.startswith("<!-- skyrun:run ml-1 -->\n### ✅ skyrun run [`ml-1`]")
    assert "Commit `0123456` of `feature` · asked for by @alice · 13 min 00 s" in body
    assert "| `train` | ✅ succeeded | 12 min 34 s | `train` | [log](" in body
    assert "| `eval` | ✅ succeeded | 3.0 s | `train` (shared) |" in body
    assert "| `accuracy` | 0.9 |" in body
    assert texts.NO_BASELINE.format(ref="main") in body
    assert "#### Report\n\n| split | acc |" in body
    assert "[Temporal UI](http://localhost:8233/namespaces/default/workflows/ml-1)" in body
    assert render.is_run_comment(body) and render.is_run_comment(body, "ml-1")
    assert not render.is_run_comment(body, "ml-2")


def test_metrics_against_a_baseline() -> None:
    current = view()
    current.baseline = Baseline("ml-0", "f" * 40, "main", {"accuracy": 0.8, "old": 1.0})

    body = render.run_comment(current)

    assert "| metric | value | [`main`](https://skyrun.example/runs/ml-0) @ `fffffff` |" in body
    assert "| `accuracy` | 0.9 | 0.8 | +0.1 (+12.5%) |" in body
    assert "| `loss` | 0.25 | — | new |" in body


def test_a_failed_stage_names_itself_shows_its_tail_and_the_next_step() -> None:
    failed = view(RunState.FAILED, error="stage 'train' failed with exit status 3")
    train = failed.progress.stages[1]
    train.state, train.error = StageState.FAILED, "stage 'train' failed with exit status 3"
    train.log_tail = ["epoch 1", "Traceback (most recent call last):", "```", "boom"]
    failed.progress.stages[2].state = StageState.SKIPPED

    body = render.run_comment(failed)

    assert texts.FAILED_STAGE_HEADING.format(stage="train") in body
    assert "````text\nepoch 1\nTraceback (most recent call last):\n```\nboom\n````" in body
    assert "[Full log of `train`](https://skyrun.example/runs/ml-1/logs/train)" in body
    assert texts.NEXT_COMMENT_FAILED.format(stage="train") in body
    assert "| `eval` | ⏭️ skipped | 3.0 s | `train` | — |" in body
    assert render.check_title(failed.progress) == "Stage train failed"


def test_a_run_failed_before_its_stages() -> None:
    failed = view(RunState.FAILED, error=".skyrun.yaml:3: unknown key 'stagse'", stages=[])
    body = render.run_comment(failed)
    assert texts.FAILED_RUN_HEADING in body and ".skyrun.yaml:3" in body
    assert "| stage |" not in body


@pytest.mark.parametrize(
    ("state", "error", "expected"),
    [
        (RunState.CANCELLED, "the run was cancelled", "every cluster it launched was torn down"),
        (RunState.TIMED_OUT, "the run exceeded timeout_minutes", "raise `timeout_minutes`"),
        (RunState.DENIED, "@bob needs write access", "Nothing was run: @bob needs write access"),
    ],
)
def test_other_endings_say_what_to_do(state: RunState, error: str, expected: str) -> None:
    assert expected in render.run_comment(view(state, error=error))


def test_a_fork_run_names_the_commit_that_was_reviewed() -> None:
    fork = view()
    assert fork.request.github is not None
    fork.request.github.head_repo = "mallory/ml"
    body = render.run_comment(fork)
    assert texts.FORK_COMMIT.format(head_repo="mallory/ml", user="alice") in body


def test_huge_reports_and_logs_stay_under_githubs_limits() -> None:
    huge = view(RunState.FAILED, error="x" * 100_000)
    huge.progress.stages[1].report = "\n".join(f"| row {i} | {'y' * 80} |" for i in range(5000))
    huge.progress.stages[1].state = StageState.FAILED
    huge.progress.stages[1].log_tail = ["z" * 10_000] * 20
    huge.progress.stages += [
        StageProgress(f"s{i}", f"c{i}", StageState.SKIPPED, metrics={f"m{i}": i})
        for i in range(300)
    ]

    body = render.run_comment(huge)
    output = render.check_output(huge)

    assert len(body) <= texts.MAX_COMMENT_CHARS
    assert "report truncated" in body and "more metrics on the [run page]" in body
    assert all(len(value) <= texts.MAX_CHECK_TEXT_CHARS for value in output.values())


SECRET = "ghs_abcdefghijklmnop"


def test_secrets_are_masked_everywhere_even_where_a_cut_would_split_them() -> None:
    masker = Masker([SECRET])
    leaky = view(RunState.FAILED, error=f"git said: {SECRET}")
    train = leaky.progress.stages[1]
    train.state, train.error = StageState.FAILED, f"boom {SECRET}"
    train.report = f"token: {SECRET}"
    train.metrics = {SECRET: 1.0}
    # A log line cut to MAX_LOG_LINE_CHARS right inside the secret.
    train.log_tail = ["x" * (render.MAX_LOG_LINE_CHARS - 8) + SECRET]
    comment = render.run_comment(leaky, masker)
    output = render.check_output(leaky, masker)
    for text in (comment, *output.values()):
        assert "ghs_" not in text
    assert "***" in comment and "***" in output["text"] and "***" in output["summary"]
    assert SECRET in train.report, "the view itself is left as it was"
    unmasked = render.run_comment(leaky)
    assert SECRET in unmasked


def test_replies_are_masked() -> None:
    detail = f"cannot parse {SECRET}."
    body = render.reply(
        ReplyInput(command(), ReplyKind.USAGE, detail=detail), LINKS, masker=Masker([SECRET])
    )
    assert SECRET not in body and "cannot parse ***" in body


def test_an_older_comment_is_folded_under_a_note() -> None:
    body = render.run_comment(view())
    folded = render.outdated(body, "ml-2", LINKS)
    assert folded.startswith("<!-- skyrun:run ml-1 -->\n" + texts.OUTDATED_TAG)
    assert "[`ml-2`](https://skyrun.example/runs/ml-2)" in folded
    assert "<details>" in folded and "| `train` |" in folded
    assert render.is_outdated(folded) and not render.is_outdated(body)
    assert render.is_run_comment(folded, "ml-1")
    assert len(render.outdated("<!-- skyrun:run a -->\n" + "x" * 70_000, "b", LINKS)) <= 65536


def test_check_run_titles() -> None:
    running = view(RunState.RUNNING)
    running.progress.stages[2].state = StageState.RUNNING
    assert render.check_title(running.progress) == "Running eval (3 of 3)"
    assert render.check_title(view(RunState.QUEUED).progress) == "Queued"
    assert render.check_title(view().progress) == "3 of 3 stages succeeded"


def command(action: CommandKind = CommandKind.RUN) -> GitHubCommand:
    return GitHubCommand(action, "acme/ml", "", 3, 9, "", "alice", "d-1")


def test_replies() -> None:
    def reply(kind: ReplyKind, **fields: object) -> str:
        return render.reply(ReplyInput(command(), kind, **fields), LINKS)  # type: ignore[arg-type]

    assert reply(ReplyKind.HELP).endswith(COMMENT_USAGE)
    assert reply(ReplyKind.USAGE, detail="bad.").startswith(
        "<!-- skyrun:reply d-1 -->\nI could not read that command: bad.\n\n"
    )
    assert "[`ml-1`](https://skyrun.example/runs/ml-1)" in reply(
        ReplyKind.ALREADY_RUNNING, run_ids=["ml-1"], commit=SHA
    )
    assert texts.REPLY_NOTHING_TO_CANCEL in reply(ReplyKind.NOTHING_TO_CANCEL)
    assert render.reply_tag("a-->b").endswith("-->") and "a>b" in render.reply_tag("a-->b")


def test_status_lists_runs() -> None:
    runs = [
        RunSummary(
            "ml-1",
            "acme/ml",
            "main",
            SHA,
            "comment",
            "alice",
            RunState.RUNNING,
            3,
            datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
            None,
        )
    ]
    table = render.status_table(runs, LINKS)
    assert (
        "| [`ml-1`](https://skyrun.example/runs/ml-1) | 🏃 running | `0123456` | @alice "
        "| 2024-05-01 12:30:00 UTC |" in table
    )
    assert render.status_table([], LINKS) == texts.REPLY_STATUS_EMPTY


# --- quality gates --------------------------------------------------------------------------

FAILED_GATES = [
    GateResult("accuracy >= 0.95", False, 0.9, 0.95, ""),
    GateResult("loss <= base", True, 0.25, 0.3, ""),
    GateResult("f1 >= base", False, None, None, "the run did not report f1"),
]


def test_a_failed_gate_fails_the_check_and_names_the_gate_while_stages_succeeded() -> None:
    gated = view(verdict=Verdict.FAILED, gates=FAILED_GATES)
    assert render.conclusion(gated.progress) == "failure"
    assert render.check_title(gated.progress) == "gate failed: accuracy 0.9 < 0.95 (and 1 more)"
    output = render.check_output(gated)
    assert "| `accuracy >= 0.95` | ❌ failed | 0.9 | 0.95 | — |" in output["summary"]
    assert "| `loss <= base` | ✅ passed | 0.25 | 0.3 | — |" in output["summary"]
    assert "| `f1 >= base` | ❌ failed | — | — | the run did not report f1 |" in output["summary"]
    assert "#### ❌ Gate failed: accuracy 0.9 < 0.95" in output["text"]
    comment = render.run_comment(gated)
    assert "### ❌ skyrun run [`ml-1`]" in comment and texts.GATES_FAILED_WORDS in comment
    assert comment.index(texts.GATES_HEADING) < comment.index(texts.METRICS_HEADING)


def test_passed_gates_keep_the_check_green_and_are_listed() -> None:
    passed = [GateResult("accuracy >= 0.5", True, 0.9, 0.5, "")]
    gated = view(verdict=Verdict.PASSED, gates=passed)
    assert render.conclusion(gated.progress) == "success"
    assert render.check_title(gated.progress) == "3 of 3 stages succeeded · 1 of 1 gates passed"
    assert "| `accuracy >= 0.5` | ✅ passed | 0.9 | 0.5 | — |" in render.run_comment(gated)
    assert "### ✅ skyrun run" in render.run_comment(gated)


def test_a_failed_stage_wins_over_the_gates_and_no_gates_show_nothing() -> None:
    failed = view(RunState.FAILED)
    failed.progress.stages[1].state = StageState.FAILED
    assert render.conclusion(failed.progress) == "failure"
    assert render.check_title(failed.progress) == "Stage train failed"
    plain = view()
    assert render.conclusion(plain.progress) == "success"
    assert texts.GATES_HEADING not in render.run_comment(plain)
    assert render.check_title(plain.progress) == "3 of 3 stages succeeded"


def test_gate_notes_cannot_break_the_table() -> None:
    odd = [GateResult("a`b >= 1", False, None, None, "x | y\nz")]
    section = render.gates_section(view(verdict=Verdict.FAILED, gates=odd))
    assert "| `a'b >= 1` | ❌ failed | — | — | x \\| y z |" in section


# Retry from the failed stage: what the comment and the check run say about a retry.


class TestRetry:
    def retried(self) -> RunView:
        shown = view(retry_of="ml-0")
        prepare, train, evaluate = shown.progress.stages
        prepare.reused_from = "ml-0"
        train.rerun_reason = "shares cluster train with eval, which failed"
        evaluate.rerun_reason = "it failed"
        return shown

    def test_the_comment_says_what_was_reused_and_why_the_rest_ran(self) -> None:
        body = render.run_comment(self.retried())
        assert "#### ♻️ Retry of [`ml-0`](https://skyrun.example/runs/ml-0)" in body
        assert "reused (not run again; result, metrics and log of `ml-0`): `prepare`" in body
        assert (
            "runs again: `train` (shares cluster train with eval, which failed), `eval` (it failed)"
        ) in body
        assert "| `prepare` | ♻️ reused |" in body
        assert "[log](https://skyrun.example/runs/ml-0/logs/prepare)" in body
        assert "[log](https://skyrun.example/runs/ml-1/logs/train)" in body
        assert "Retry of" in render.check_output(self.retried())["summary"]

    def test_no_retry_section_for_other_runs(self) -> None:
        assert "Retry of" not in render.run_comment(view())

    def test_a_failed_comment_run_suggests_the_retry_a_failed_push_run_does_not(self) -> None:
        failed = view(RunState.FAILED)
        failed.progress.pr_number = 3
        failed.progress.stages[2].state = StageState.FAILED
        assert texts.NEXT_RETRY in render.run_comment(failed)
        failed.request.trigger = Trigger.PUSH
        assert texts.NEXT_RETRY not in render.run_comment(failed)
        before_stages = view(RunState.FAILED, stages=[])
        before_stages.progress.pr_number = 3
        assert texts.NEXT_RETRY not in render.run_comment(before_stages)

    def test_replies_to_a_retry(self) -> None:
        command = GitHubCommand(
            action=CommandKind.RETRY,
            repo="acme/ml",
            clone_url="https://github.com/acme/ml.git",
            pr_number=3,
            comment_id=9,
            comment_created_at="",
            requested_by="alice",
            delivery_id="d-9",
        )
        refused = render.reply(
            ReplyInput(command, ReplyKind.RETRY_REFUSED, "run x is busy."), LINKS
        )
        assert "♻️ Nothing was retried: run x is busy." in refused
        again = render.reply(
            ReplyInput(command, ReplyKind.ALREADY_RETRIED, run_ids=["ml-0", "ml-0-retry"]), LINKS
        )
        assert (
            "[`ml-0`](https://skyrun.example/runs/ml-0) was already retried as "
            "[`ml-0-retry`](https://skyrun.example/runs/ml-0-retry)"
        ) in again


def test_a_stage_that_came_through_preemption_says_so() -> None:
    current = view()
    current.progress.stages[1].infra_recovered = [InfraCause.LOST, InfraCause.LOST]
    current.progress.stages[1].infra_retries = 2

    body = render.run_comment(current)

    assert "| `train` | ✅ succeeded (recovered after preemption, 2\u00d7) | 12 min 34 s |" in body
    assert "| `eval` | ✅ succeeded | 3.0 s |" in body


# --- stages as a DAG -----------------------------------------------------------------------


def test_parallel_stages_are_shown_as_such_above_the_table() -> None:
    parallel = view()
    needs = {"prepare": [], "train": ["prepare"], "eval": ["prepare"]}
    for stage in parallel.progress.stages:
        stage.needs = needs[stage.name]
    body = render.run_comment(parallel)
    flow = "Stages: `prepare` → `train` ∥ `eval`\n"
    assert flow in body
    assert body.index(flow) < body.index(texts.STAGES_HEADING)
    assert flow in render.check_output(parallel)["summary"]


def test_stages_in_sequence_get_no_flow_line() -> None:
    assert "Stages:" not in render.run_comment(view())  # runs before `needs:` (None)
    chain = view()
    for index, stage in enumerate(chain.progress.stages):
        stage.needs = [chain.progress.stages[index - 1].name] if index else []
    assert "Stages:" not in render.run_comment(chain)


def test_a_queued_run_shows_its_place_in_the_comment_and_the_check_title() -> None:
    queued = view(
        RunState.QUEUED,
        queue_position=2,
        queue_ahead="acme/ml#41",
        queue_pool="repository",
        queue_capacity=1,
    )
    body = render.run_comment(queued)
    assert (
        "⏳ Queued: 2nd in line, behind acme/ml#41. acme/ml runs at most 1 at once "
        "(`concurrency` in .skyrun.yaml)."
    ) in body
    output = render.check_output(queued)
    assert output["title"] == "Queued: 2nd in line, behind acme/ml#41"
    assert "2nd in line" in output["summary"]
    first = view(RunState.QUEUED, queue_position=1, queue_pool="deployment", queue_capacity=3)
    assert render.check_title(first.progress) == "Queued: next in line"
    assert "SKYRUN_MAX_CONCURRENT_RUNS" in render.run_comment(first)
    # Not waiting in a queue (a lane's wait, or admitted): no place shown.
    assert render.check_title(view(RunState.QUEUED).progress) == texts.CHECK_TITLE_QUEUED
    assert "in line" not in render.run_comment(view(RunState.RUNNING))
