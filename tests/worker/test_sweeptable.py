"""The sweep's results table, pure: rows, the best one in the first gate's direction (or by the
first metric), changes against the baseline, hostile values, Markdown and Slack."""

from __future__ import annotations

import pytest

from worker.baseline import Baseline
from worker.contract import (
    GateResult,
    RunProgress,
    RunRequest,
    RunState,
    StageProgress,
    Trigger,
    Verdict,
)
from worker.links import Links
from worker.masking import Masker
from worker.settings import load_settings
from worker.slack.blocks import ACTION_CANCEL
from worker.sweepspec import SweepAxis, SweepRequest, child_id, combinations
from worker.sweeptable import (
    AXES_JOIN,
    BEST_MARK,
    HEADER_CANCELLED,
    HEADER_RUNNING,
    NEXT_RUNNING,
    NO_BASELINE,
    NOT_STARTED,
    Ranking,
    SweepRow,
    SweepView,
    best,
    comment,
    is_comment,
    metric_columns,
    ranking,
    slack_blocks,
    table,
)

LINKS = Links(load_settings(_env_file=None, SKYRUN_PUBLIC_URL="https://skyrun.example"))
SWEEP = "ml-sweep-0123456789"
SHA = "a" * 40


def progress(
    index: int,
    state: RunState = RunState.SUCCEEDED,
    gates: list[GateResult] | None = None,
    **metrics: float,
) -> RunProgress:
    return RunProgress(
        run_id=child_id(SWEEP, index),
        repo="acme/ml",
        ref="feature",
        commit=SHA,
        trigger=Trigger.COMMENT,
        requested_by="alice",
        state=state,
        stages=[StageProgress("train", "train", metrics=dict(metrics))],
        started_at="2026-12-01T10:00:00+00:00",
        finished_at="2026-12-01T10:00:42+00:00" if state.finished else "",
        verdict=(
            Verdict.NONE
            if not gates
            else (Verdict.PASSED if all(g.passed for g in gates) else Verdict.FAILED)
        ),
        gates=gates or [],
    )


def request(*axes: SweepAxis) -> SweepRequest:
    base = RunRequest(
        repo="acme/ml",
        clone_url="https://github.com/acme/ml.git",
        ref="feature",
        commit=SHA,
        trigger=Trigger.COMMENT,
        requested_by="alice",
    )
    return SweepRequest(base, list(axes))


def view(
    progresses: list[RunProgress | None],
    *,
    axes: tuple[SweepAxis, ...] = (SweepAxis("LR", ["0.1", "0.2"]), SweepAxis("BS", ["32", "64"])),
    **fields: object,
) -> SweepView:
    sweep = request(*axes)
    combos = combinations(sweep.axes)
    rows = [
        SweepRow(index, combos[index], child_id(SWEEP, index), found)
        for index, found in enumerate(progresses)
    ]
    return SweepView(SWEEP, sweep, rows, LINKS, **fields)  # type: ignore[arg-type]


def rows(*progresses: RunProgress | None) -> list[SweepRow]:
    return view(list(progresses)).rows


def gate(expr: str, passed: bool = True, value: float = 0, threshold: float = 0) -> GateResult:
    return GateResult(expr, passed, value, threshold)


# Which row is best.


@pytest.mark.parametrize(
    ("expr", "higher"),
    [
        ("loss <= 0.5", False),
        ("loss < base", False),
        ("loss >= 1", True),
        ("loss > base + 1", True),
    ],
)
def test_the_first_gate_ranks_in_its_direction(expr: str, higher: bool) -> None:
    found = rows(
        progress(0, gates=[gate(expr), gate("accuracy >= 0")], loss=0.3, accuracy=0.1),
        progress(1, gates=[gate(expr), gate("accuracy >= 0")], loss=0.2, accuracy=0.9),
        progress(2, gates=[gate(expr), gate("accuracy >= 0")], loss=0.4, accuracy=0.5),
    )
    rank = ranking(found)
    assert rank == Ranking("loss", higher, gate=expr)
    assert best(found, rank) == (2 if higher else 1)


def test_without_gates_the_first_metric_ranks_higher_is_better() -> None:
    found = rows(progress(0, accuracy=0.5, loss=9), progress(1, accuracy=0.7, loss=1))
    assert ranking(found) == Ranking("accuracy", True)
    assert best(found, ranking(found)) == 1


def test_only_runs_that_succeeded_and_reported_compete_and_ties_go_to_the_first() -> None:
    found = rows(
        progress(0, RunState.FAILED, accuracy=0.99),
        progress(1, RunState.RUNNING, accuracy=0.98),
        progress(2, accuracy=0.5),
        progress(3, accuracy=0.5),
    )
    assert best(found, ranking(found)) == 2
    assert (
        best(rows(progress(0, RunState.FAILED, accuracy=1), None), Ranking("accuracy", True))
        is None
    )
    assert ranking(rows(None, progress(1))) is None
    assert best(rows(progress(0, loss=1)), Ranking("accuracy", True)) is None


def test_the_ranking_metric_is_the_first_column() -> None:
    found = rows(progress(0, gates=[gate("loss <= 1")], accuracy=1, loss=2), progress(1, f1=3))
    assert metric_columns(found, ranking(found)) == ["loss", "accuracy", "f1"]


# The Markdown comment.


def test_a_running_sweep_shows_every_row_and_how_to_cancel() -> None:
    body = comment(view([progress(0, loss=0.2), None, progress(2, RunState.RUNNING), None]))
    assert is_comment(body, SWEEP) and not is_comment(body, SWEEP + "x")
    assert HEADER_RUNNING.format(sweep_id=SWEEP, done=1, count=4) in body
    subject = "`LR`" + AXES_JOIN + "`BS` on commit `aaaaaaa` of `feature` · asked for by @alice"
    assert subject + " · 4 runs" in body
    lines = body.splitlines()
    assert "| | `LR` | `BS` | state | duration | `loss` | gates | run |" in lines
    assert (
        f"| {BEST_MARK} | `0.1` | `32` | ✅ succeeded | 42 s | 0.2 | — | "
        f"[`{SWEEP}-1`](https://skyrun.example/runs/{SWEEP}-1) |"
    ) in lines
    assert f"|  | `0.1` | `64` | ⏳ queued | … | … | … | [`{SWEEP}-2`]" in body
    assert f"|  | `0.2` | `32` | 🏃 running | … | … | … | [`{SWEEP}-3`]" in body
    assert NEXT_RUNNING in body


def test_changes_are_against_the_baseline_and_gates_are_summarised() -> None:
    baseline = Baseline("ml-base", "b" * 40, "main", {"loss": 0.5})
    done = view(
        [
            progress(0, gates=[gate("loss <= 0.45", True, 0.4, 0.45)], loss=0.4),
            progress(1, gates=[gate("loss <= 0.45", False, 0.6, 0.45)], loss=0.6),
        ],
        axes=(SweepAxis("LR", ["1", "2"]),),
        state=RunState.SUCCEEDED,
        baseline=baseline,
        base_ref="main",
    )
    body = comment(done)
    assert "all 2 runs finished" in body
    assert "| 0.4 (-0.1 (-20.0%)) | ✅ 1 of 1 |" in body
    assert "| ❌ gate failed | 42 s | 0.6 (+0.1 (+20.0%)) | ❌ loss 0.6 > 0.45 |" in body
    assert "Changes are against [`main`](https://skyrun.example/runs/ml-base) @ `bbbbbbb`" in body
    done.baseline = None
    assert NO_BASELINE.format(ref="main") in comment(done)


def test_hostile_values_cannot_break_the_table_or_leak_a_secret() -> None:
    secret = "ghp_secretsecretsecret"
    axes = (SweepAxis("X", ["a|b`c\nd", secret, "<script>", "x" * 500]),)
    body = comment(view([progress(i, accuracy=i) for i in range(4)], axes=axes), Masker([secret]))
    assert secret not in body and "***" in body
    rows_ = [line for line in body.splitlines() if "/runs/" in line]
    assert len(rows_) == 4
    assert all(line.count(" | ") == rows_[0].count(" | ") for line in rows_)
    assert "`a\\|b'c d`" in body
    assert "x" * 60 not in body


def test_a_cancelled_sweep_says_so() -> None:
    body = comment(
        view(
            [progress(0, RunState.CANCELLED), progress(1, RunState.CANCELLED), None],
            axes=(SweepAxis("A", ["1", "2", "3"]),),
            state=RunState.CANCELLED,
            error="cancelled by @alice with `/skyrun cancel`",
        )
    )
    assert HEADER_CANCELLED.format(sweep_id=SWEEP) in body
    assert body.count("🚫 was cancelled") == 2
    assert f"| `3` | {NOT_STARTED} |" in body  # the sweep ended before it started this run
    assert "every run it started was cancelled and torn down" in body
    assert NEXT_RUNNING not in body


def test_the_table_has_one_column_per_key_and_metric() -> None:
    text = table(
        view([progress(0, a=1, b=2), progress(1, c=3)], axes=(SweepAxis("K", ["1", "2"]),))
    )
    head, rule, *body = text.splitlines()
    assert head.count("|") == rule.count("|") == body[0].count("|") == body[1].count("|")


# Slack.


def test_the_slack_message_lists_rows_and_offers_cancel_while_running() -> None:
    running = view(
        [progress(0, loss=0.2), progress(1, RunState.RUNNING)],
        axes=(SweepAxis("A", ["<!here>", "2"]),),
    )
    blocks = slack_blocks(running)
    text = "\n".join(str(block) for block in blocks)
    assert "&lt;!here&gt;" in text and "<!here>" not in text
    assert ":trophy: :white_check_mark: `A=&lt;!here&gt;` succeeded · 42 s · `loss` *0.2*" in text
    (actions,) = [block for block in blocks if block["type"] == "actions"]
    (button,) = actions["elements"]
    assert button["action_id"] == ACTION_CANCEL and button["value"] == SWEEP
    running.state = RunState.SUCCEEDED
    assert not [block for block in slack_blocks(running) if block["type"] == "actions"]
