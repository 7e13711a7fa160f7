"""Rendering a run as Block Kit and thread replies (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.slack import Message, buttons, message_text
from worker.baseline import Baseline
from worker.contract import (
    GateResult,
    InfraCause,
    RunProgress,
    RunState,
    StageProgress,
    StageState,
    Trigger,
    Verdict,
)
from worker.links import Links
from worker.masking import Masker
from worker.settings import load_settings
from worker.slack import texts
from worker.slack.blocks import (
    ACTION_CANCEL,
    SECTION_LIMIT,
    fallback_text,
    final_reply,
    run_blocks,
    stage_reply,
)

STARTED = "2025-01-02T10:00:00+00:00"
FINISHED = "2025-01-02T10:03:05+00:00"


def progress(**fields: Any) -> RunProgress:
    values: dict[str, Any] = {
        "run_id": "widgets-1a2b3c4d5e",
        "repo": "acme/widgets",
        "ref": "main",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "trigger": Trigger.SLACK,
        "requested_by": "U0ALICE",
        "started_at": STARTED,
        "backend": "local",
    }
    values.update(fields)
    return RunProgress(**values)


def stage(name: str, state: StageState, **fields: Any) -> StageProgress:
    return StageProgress(name=name, cluster=fields.pop("cluster", name), state=state, **fields)


def rendered(run: RunProgress, links: Links, **kwargs: Any) -> Message:
    return Message("C1", "1.1", fallback_text(run), run_blocks(run, links, **kwargs))


@pytest.fixture
def links() -> Links:
    return Links(
        load_settings(
            _env_file=None,
            SKYRUN_PUBLIC_URL="http://skyrun.test",
            TEMPORAL_UI_URL="http://localhost:8233",
            TEMPORAL_NAMESPACE="default",
        )
    )


def test_a_running_run_shows_its_stages_links_and_a_cancel_button(links: Links) -> None:
    run = progress(
        state=RunState.RUNNING,
        stages=[
            stage("prep", StageState.SUCCEEDED, duration_s=12.4),
            stage("train", StageState.RUNNING, started_at=STARTED),
            stage("eval", StageState.PENDING, cluster="train"),
        ],
    )
    message = rendered(run, links)
    text = message_text(message)
    assert message.text == "skyrun acme/widgets@main: running"
    assert ":arrows_counterclockwise: *acme/widgets@main* — running" in text
    assert "run `widgets-1a2b3c4d5e` · commit `0123456` · Slack by <@U0ALICE>" in text
    assert ":white_check_mark: `prep` succeeded in 12 s" in text
    assert "`train` running on `train` since <!date^1735812000^{time}|10:00 UTC>" in text
    assert ":white_circle: `eval` waiting" in text
    found = buttons(message)
    assert found["skyrun_link_run"]["url"] == "http://skyrun.test/runs/widgets-1a2b3c4d5e"
    assert found["skyrun_link_logs"]["url"].endswith("/runs/widgets-1a2b3c4d5e/logs/train")
    assert found["skyrun_link_temporal"]["url"] == (
        "http://localhost:8233/namespaces/default/workflows/widgets-1a2b3c4d5e"
    )
    assert found[ACTION_CANCEL]["value"] == "widgets-1a2b3c4d5e"
    assert found[ACTION_CANCEL]["style"] == "danger"
    assert "confirm" in found[ACTION_CANCEL]


def test_a_queued_run_says_it_is_planning(links: Links) -> None:
    text = message_text(rendered(progress(), links))
    assert texts.PLANNING in text
    assert "*acme/widgets@main* — queued" in text


def test_a_finished_run_shows_metrics_against_the_baseline_and_the_report(links: Links) -> None:
    run = progress(
        state=RunState.SUCCEEDED,
        finished_at=FINISHED,
        stages=[
            stage(
                "train",
                StageState.SUCCEEDED,
                duration_s=180,
                metrics={"loss": 0.4, "accuracy": 0.91, "epochs": 20.0},
                report="| metric | value |\n|---|---|\n| loss | 0.4 |",
            )
        ],
    )
    baseline = Baseline("widgets-0000000000", "f" * 40, "main", {"loss": 0.5, "accuracy": 0.91})
    message = rendered(run, links, baseline=baseline, compared_on="main")
    text = message_text(message)
    # The same words as the PR comment and the run page (worker/formatting.py).
    assert "took 3 min 05 s" in text
    assert "`accuracy` *0.91* (±0 vs last success)" in text
    assert "`loss` *0.4* (-0.1 (-20.0%) vs last success)" in text
    assert "`epochs` *20* (new)" in text
    assert (
        texts.BASELINE_NOTE.format(
            url="http://skyrun.test/runs/widgets-0000000000",
            run_id="widgets-0000000000",
            branch="`main`",
        )
        in text
    )
    assert "*Report*\n```| metric | value |\n|---|---|\n| loss | 0.4 |```" in text
    assert ACTION_CANCEL not in buttons(message)

    alone = message_text(rendered(run, links, compared_on="main"))
    assert texts.NO_BASELINE.format(branch="`main`") in alone
    assert "vs last success" not in alone
    # Not known (not looked up, or the lookup failed): no claim either way.
    unknown = message_text(rendered(run, links))
    assert "vs last success" not in unknown and "compare" not in unknown.lower()


def test_the_baseline_note_names_the_baselines_branch_not_the_runs(links: Links) -> None:
    """A pull request run of feature-x is compared with its base branch's run."""
    run = progress(
        ref="feature-x",
        pr_number=7,
        base_ref="main",
        state=RunState.SUCCEEDED,
        finished_at=FINISHED,
        stages=[stage("train", StageState.SUCCEEDED, duration_s=5, metrics={"accuracy": 0.9})],
    )
    baseline = Baseline("widgets-main", "e" * 40, "main", {"accuracy": 0.8})
    text = message_text(rendered(run, links, baseline=baseline, compared_on="main"))
    assert "`accuracy` *0.9* (+0.1 (+12.5%) vs last success)" in text
    assert "the last successful run of `main`" in text and "feature-x`." not in text
    none = message_text(rendered(run, links, compared_on="main"))
    assert texts.NO_BASELINE.format(branch="`main`") in none


def test_a_failed_stage_is_named_with_what_to_do_next(links: Links) -> None:
    failed = stage(
        "train",
        StageState.FAILED,
        duration_s=4,
        exit_code=3,
        error="stage 'train' failed with exit status 3",
        log_tail=["step 1", "Traceback <module> & ```", "ValueError: boom"],
    )
    run = progress(
        state=RunState.FAILED,
        finished_at=FINISHED,
        error="stage 'train' failed with exit status 3",
        stages=[
            stage("prep", StageState.SUCCEEDED, duration_s=1),
            failed,
            stage("eval", StageState.SKIPPED),
        ],
    )
    text = message_text(rendered(run, links))
    assert ":x: *acme/widgets@main* — failed" in text
    assert ":x: `train` failed in 4.0 s (exit status 3)" in text
    assert ":fast_forward: `eval` skipped" in text
    assert ":warning: stage 'train' failed with exit status 3" in text
    assert (
        texts.NEXT.format(
            hint=texts.NEXT_STAGE_FAILED.format(
                stage="train",
                log="<http://skyrun.test/runs/widgets-1a2b3c4d5e/logs/train|full log>",
                rerun="`/skyrun acme/widgets@main`",
            )
        )
        in text
    )
    reply = stage_reply(run, failed, links)
    assert reply.startswith(":x: `train` failed in 4.0 s (exit status 3).")
    assert "```step 1\nTraceback &lt;module&gt; &amp; '''\nValueError: boom```" in reply
    assert "<http://skyrun.test/runs/widgets-1a2b3c4d5e/logs/train|Full log of train>" in reply
    final = final_reply(run, links)
    assert final.startswith("<@U0ALICE> :x: Run failed in 3 min 05 s.")
    assert "*What next:*" in final


@pytest.mark.parametrize(
    ("fields", "hint"),
    [
        (
            {"state": RunState.FAILED, "error": ".skyrun.yaml:3: bad"},
            texts.NEXT_SETUP_FAILED.format(rerun="`/skyrun acme/widgets@main`"),
        ),
        (
            {"state": RunState.TIMED_OUT, "error": "too slow"},
            texts.NEXT_TIMED_OUT.format(rerun="`/skyrun acme/widgets@main`"),
        ),
        (
            {"state": RunState.CANCELLED, "error": "the run was cancelled", "pr_number": 7},
            texts.NEXT_CANCELLED.format(rerun="comment `/skyrun` on PR #7"),
        ),
        (
            {"state": RunState.CANCELLED, "error": "x", "repo": "/src/proj", "ref": ""},
            texts.NEXT_CANCELLED.format(rerun="`skyrun run /src/proj`"),
        ),
    ],
)
def test_every_failure_says_what_to_do_next(
    links: Links, fields: dict[str, Any], hint: str
) -> None:
    text = message_text(rendered(progress(finished_at=FINISHED, **fields), links))
    assert texts.NEXT.format(hint=hint) in text


def test_push_runs_and_disabled_run_pages(links: Links) -> None:
    run = progress(
        trigger=Trigger.PUSH, requested_by="octo<cat>", state=RunState.RUNNING, stages=[]
    )
    message = rendered(run, links, run_pages=False)
    assert "push by octo&lt;cat&gt;" in message_text(message)
    assert set(buttons(message)) == {"skyrun_link_temporal", ACTION_CANCEL}


def test_long_reports_are_cut_to_what_slack_accepts(links: Links) -> None:
    report = "\n".join(f"| row {i} | {'x' * 40} |" for i in range(200))
    run = progress(
        state=RunState.SUCCEEDED,
        finished_at=FINISHED,
        stages=[stage("eval", StageState.SUCCEEDED, duration_s=1, report=report)],
    )
    blocks = run_blocks(run, links)
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks)
    assert "full report is on the <http://skyrun.test/runs/widgets-1a2b3c4d5e|run page>" in (
        message_text(Message("C", "1", "", blocks))
    )


def test_durations_are_written_as_on_every_other_surface(links: Links) -> None:
    run = progress(
        state=RunState.FAILED,
        finished_at="2025-01-02T12:07:00+00:00",
        stages=[stage("train", StageState.FAILED, duration_s=61, exit_code=2)],
    )
    assert "took 2 h 07 min" in message_text(rendered(run, links))
    assert "failed in 1 min 01 s" in stage_reply(run, run.stages[0], links)
    assert " in 2 h 07 min." in final_reply(run, links)


def test_with_a_masker_no_secret_survives_even_where_a_cut_splits_it(links: Links) -> None:
    secret = "xoxb-secret-bot-token-for-blocks"
    limit = SECTION_LIMIT - len(texts.REPORT_TITLE) - 200
    # The report is cut at `limit`: right inside the secret.
    report = "x" * (limit - 10) + secret
    run = progress(
        state=RunState.FAILED,
        finished_at=FINISHED,
        error=f"stage 'eval' failed: <{secret}>",
        stages=[stage("eval", StageState.FAILED, duration_s=1, report=report)],
    )
    plain = message_text(rendered(run, links))
    assert secret[:10] in plain, "without a masker the cut leaves part of it"
    masked = message_text(rendered(run, links, masker=Masker([secret])))
    assert "xoxb-" not in masked and "&lt;***&gt;" in masked
    assert run.error.endswith(f"<{secret}>"), "the run itself is left as it was"


def test_a_failed_gate_reads_as_failed_with_each_gate_and_what_to_do(links: Links) -> None:
    gates = [
        GateResult("accuracy >= 95", False, 93, 95, ""),
        GateResult("loss <= base", True, 0.2, None, "no baseline"),
    ]
    run = progress(
        state=RunState.SUCCEEDED,
        finished_at=FINISHED,
        stages=[stage("train", StageState.SUCCEEDED, metrics={"accuracy": 93, "loss": 0.2})],
        verdict=Verdict.FAILED,
        gates=gates,
    )
    text = message_text(rendered(run, links))
    assert texts.GATES_FAILED_WORDS in text and ":x: *acme/widgets@main*" in text
    assert texts.GATES_FAILED.format(summary="accuracy 93 &lt; 95") in text
    assert ":x: `accuracy &gt;= 95` failed: 93 vs 95" in text
    assert ":white_check_mark: `loss &lt;= base` passed: 0.2 vs — (no baseline)" in text
    assert texts.GATES_FAILED_WORDS in fallback_text(run)
    final = final_reply(run, links)
    assert texts.GATES_FAILED_WORDS in final and "accuracy 93 &lt; 95" in final


def test_passed_gates_are_listed_under_a_succeeded_title(links: Links) -> None:
    run = progress(
        state=RunState.SUCCEEDED,
        finished_at=FINISHED,
        stages=[stage("train", StageState.SUCCEEDED, metrics={"accuracy": 97})],
        verdict=Verdict.PASSED,
        gates=[GateResult("accuracy >= 95", True, 97, 95, "")],
    )
    text = message_text(rendered(run, links))
    assert ":white_check_mark: *acme/widgets@main* — succeeded" in text
    assert ":white_check_mark: `accuracy &gt;= 95` passed: 97 vs 95" in text
    assert texts.GATES_FAILED_WORDS not in text


# Retry from the failed stage: the Retry button, and what a retry's message says.


def test_a_failed_run_offers_retry_and_a_retry_says_what_it_reused(links: Links) -> None:
    from worker.slack.blocks import ACTION_RETRY

    failed = progress(
        state=RunState.FAILED,
        finished_at=FINISHED,
        error="stage 'eval' failed with exit status 4",
        stages=[stage("prep", StageState.SUCCEEDED), stage("eval", StageState.FAILED)],
    )
    message = rendered(failed, links)
    assert buttons(message)[ACTION_RETRY]["value"] == "widgets-1a2b3c4d5e"
    assert texts.RETRY_HINT.format(run_id="widgets-1a2b3c4d5e") in message_text(message)
    assert "retry widgets-1a2b3c4d5e" in final_reply(failed, links)

    retry = progress(
        run_id="widgets-1a2b3c4d5e-retry",
        state=RunState.SUCCEEDED,
        finished_at=FINISHED,
        retry_of="widgets-1a2b3c4d5e",
        stages=[
            stage("prep", StageState.SUCCEEDED, reused_from="widgets-1a2b3c4d5e"),
            stage("eval", StageState.SUCCEEDED, duration_s=2.0, rerun_reason="it failed"),
        ],
    )
    message = rendered(retry, links)
    text = message_text(message)
    old = "<http://skyrun.test/runs/widgets-1a2b3c4d5e|widgets-1a2b3c4d5e>"
    assert f"retry of {old}" in text
    assert f"`prep` reused from {old}" in text
    assert "`eval` succeeded in 2.0 s · runs again: it failed" in text
    assert "Reused (not run again; result, metrics and log of `widgets-1a2b3c4d5e`): `prep`" in text
    assert ACTION_RETRY not in buttons(message)
    reply = stage_reply(retry, retry.stages[0], links)
    assert "/runs/widgets-1a2b3c4d5e/logs/prep|" in reply
    # Running or succeeded runs have no Retry button.
    assert ACTION_RETRY not in buttons(rendered(progress(state=RunState.RUNNING), links))


def test_a_stage_that_came_through_infrastructure_failures_says_so(links: Links) -> None:
    run = progress(
        state=RunState.SUCCEEDED,
        stages=[
            stage(
                "train",
                StageState.SUCCEEDED,
                duration_s=12.4,
                infra_recovered=[InfraCause.CAPACITY, InfraCause.LOST],
                infra_retries=2,
            )
        ],
    )
    text = message_text(rendered(run, links))
    assert (
        "`train` succeeded in 12 s · recovered after no capacity, 1\u00d7; "
        "recovered after preemption, 1\u00d7" in text
    )


def test_a_warm_cluster_and_one_provisioned_ahead_are_named(links: Links) -> None:
    run = progress(
        state=RunState.SUCCEEDED,
        stages=[
            stage("prep", StageState.SUCCEEDED, duration_s=2, cluster_reused_from="w-7"),
            stage(
                "train",
                StageState.SUCCEEDED,
                duration_s=4,
                provision_finished_at="2026-01-01T00:00:01+00:00",
            ),
        ],
    )
    text = message_text(rendered(run, links))
    assert "`prep` succeeded in 2.0 s · reused warm cluster from run w-7" in text
    assert "`train` succeeded in 4.0 s · cluster provisioned ahead" in text


# --- stages as a DAG -----------------------------------------------------------------------


def test_parallel_stages_are_shown_as_such(links: Links) -> None:
    run = progress(
        state=RunState.RUNNING,
        stages=[
            stage("prep", StageState.SUCCEEDED, needs=[], duration_s=2),
            stage("train-a", StageState.RUNNING, needs=["prep"], started_at=STARTED),
            stage("train-b", StageState.RUNNING, needs=["prep"], started_at=STARTED),
            stage("join", StageState.PENDING, needs=["train-a", "train-b"]),
        ],
    )
    text = message_text(rendered(run, links))
    assert "_Stages: `prep` → `train-a` ∥ `train-b` → `join`_" in text
    assert text.count("running on") == 2


def test_stages_in_sequence_get_no_flow_line(links: Links) -> None:
    run = progress(
        state=RunState.RUNNING,
        stages=[stage("a", StageState.SUCCEEDED), stage("b", StageState.RUNNING)],
    )
    assert "Stages:" not in message_text(rendered(run, links))


def test_a_queued_run_says_its_place_in_line(links: Links) -> None:
    run = progress(
        state=RunState.QUEUED,
        stages=[stage("train", StageState.PENDING)],
        queue_position=2,
        queue_ahead="acme/widgets#41",
        queue_pool="repository",
        queue_capacity=1,
    )
    text = message_text(rendered(run, links))
    assert "2nd in line, behind acme/widgets#41" in text
    assert "acme/widgets runs at most 1 at once" in text
    run.queue_position, run.state = None, RunState.RUNNING
    assert "in line" not in message_text(rendered(run, links))
