"""Slack end to end: command → bot → Temporal → worker (local backend) → the fake Slack (the
stack is in tests/worker/slack/stack.py), and the reporter on its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from bot.slack import texts as bot_texts
from tests.bot.slack.helpers import terminate_runs
from tests.fakes.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    Message,
    block_action,
    buttons,
    deliver,
    message_text,
)
from tests.runs import SLOW_TASK, clusters_left, request_for, wait_finished
from tests.worker.slack.stack import PIPELINE, STARTED_RE, Stack
from worker.baseline import HANDLE, Baseline, Baselines
from worker.contract import (
    RunProgress,
    RunRequest,
    RunState,
    SlackTarget,
    StageProgress,
    StageState,
    Trigger,
)
from worker.masking import Masker
from worker.models import ReportInput
from worker.reporting import make_reporting
from worker.settings import Settings
from worker.slack import texts
from worker.slack.blocks import ACTION_CANCEL, TAIL_CHARS
from worker.slack.reporter import SlackReporter


def test_the_worker_reports_to_slack_only_when_configured(
    make_settings: Callable[..., Settings],
) -> None:
    configured = make_settings(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET)
    assert isinstance(make_reporting(configured).reporters.get("slack"), SlackReporter)
    assert "slack" not in make_reporting(make_settings()).reporters


async def test_one_message_follows_the_run_and_ends_with_metrics_against_the_last_success(
    stack: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, PIPELINE)
    first = await stack.start(f"{repo}@main LOSS=0.5", user="U0ALICE")
    await stack.finished(first)
    await client.get_workflow_handle(first).result()
    second = await stack.start(f"{repo}@main LOSS=0.4", user="U0ALICE")
    message = await stack.finished(second)
    slack = stack.slack

    # One message per run, posted once, then only ever updated in place.
    assert len(slack.top_level("C0RUNS")) == 2
    assert message.channel == "C0RUNS"
    updates = [c.args for c in slack.calls_to("chat.update") if c.args["ts"] == message.ts]
    assert len(updates) >= 3
    assert all(update["channel"] == message.channel for update in updates)
    top_level_ts = {m.ts for m in slack.top_level()}
    assert {c.args["ts"] for c in slack.calls_to("chat.update")} <= top_level_ts
    assert all(c.token == BOT_TOKEN for c in slack.calls if c.method != "response_url")
    # While it ran, the message offered a Cancel button; the final one does not.
    running = [u for u in updates if any(e.get("action_id") == ACTION_CANCEL for e in _elements(u))]
    assert running
    assert ACTION_CANCEL not in buttons(message)

    text = message_text(message)
    assert f"*{repo}@main* — succeeded" in text
    assert ":white_check_mark: `prep` succeeded" in text
    assert ":white_check_mark: `train` succeeded" in text
    assert "`loss` *0.4* (-0.1 (-20.0%) vs last success)" in text
    assert f"<http://skyrun.test/runs/{first}|{first}>, the last successful run of `main`" in text
    assert "```| loss | 0.4 |```" in text
    assert message.text == f"skyrun {repo}@main: succeeded"

    thread = [m.text for m in slack.thread(message.ts)]
    assert any(t.startswith(":white_check_mark: `prep` succeeded") for t in thread)
    assert any(t.startswith(":white_check_mark: `train` succeeded") for t in thread)
    assert any("Metrics: `loss` 0.4" in t for t in thread)
    assert stack.final_reply(message).startswith("<@U0ALICE> :white_check_mark: Run succeeded")
    # Secrets typed as KEY=VALUE never reach Slack (LOSS is not secret, but the rule is general).
    assert all("LOSS=" not in str(c.args) for c in slack.calls if c.method != "response_url")

    # Status shows the same view, and lists the runs.
    status = await stack.reply(await stack.command(f"status {second}"))
    assert status["text"] == message.text
    assert f"*{repo}@main* — succeeded" in message_text(
        Message("C", "1", status["text"], status["blocks"])
    )
    latest = await stack.reply(await stack.command("status"))
    assert first in latest["text"] and second in latest["text"]


def _elements(update: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in update.get("blocks", []) for e in b.get("elements", [])]


async def _slow_repo(stack: Stack, git_repo: Callable[..., Path], tmp_path: Path) -> str:
    files = {
        "train.yaml": SLOW_TASK.format(pidfile=tmp_path / f"{uuid.uuid4().hex}.pid"),
        ".skyrun.yaml": "stages: [{name: train, task: train.yaml}]\n",
    }
    return stack.repo(git_repo, files)


def _running(message: Message) -> bool:
    return "running on `train`" in message_text(message)


async def test_cancel_button_cancels_for_the_starter_and_tears_everything_down(
    stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = await _slow_repo(stack, git_repo, tmp_path)
    run_id = await stack.start(f"{repo}@main", user="U0ALICE")
    message = await stack.wait_message(run_id, _running)
    button = buttons(message)[ACTION_CANCEL]

    stranger = stack.slack.response_url("stranger")
    clicked = block_action(button, response_url=stranger, message=message, user="U0MALLORY")
    assert (await deliver(stack.http, clicked)).status_code == 200
    await stack.slack.wait_for(lambda: stack.slack.responses("stranger"), 30, "the denial")
    assert stack.slack.responses("stranger")[0]["text"].startswith(":no_entry:")

    starter = stack.slack.response_url("starter")
    clicked = block_action(button, response_url=starter, message=message, user="U0ALICE")
    assert (await deliver(stack.http, clicked)).status_code == 200
    final = await stack.finished(run_id)

    [confirmation] = stack.slack.responses("starter")
    assert confirmation["response_type"] == "in_channel"
    assert confirmation["thread_ts"] == message.ts
    text = message_text(final)
    assert f"*{repo}@main* — cancelled" in text
    assert ":no_entry_sign: `train` cancelled" in text
    assert "every cluster was torn down" in text
    assert ACTION_CANCEL not in buttons(final)
    assert stack.final_reply(final).startswith("<@U0ALICE> :no_entry_sign: Run cancelled")
    assert clusters_left(stack.settings) == []


async def test_cancel_command_by_an_allowed_user(
    stack: Stack, client: Client, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = await _slow_repo(stack, git_repo, tmp_path)
    run_id = await stack.start(f"{repo}@main", user="U0ALICE")
    await stack.wait_message(run_id, _running)

    reply = await stack.reply(await stack.command(f"cancel {run_id}", user="U0ADMIN"))
    assert reply["text"] == bot_texts.CANCELLED.format(
        user="U0ADMIN", url=f"http://skyrun.test/runs/{run_id}", run_id=run_id
    )
    final = await stack.finished(run_id)
    assert "— cancelled" in message_text(final)
    assert clusters_left(stack.settings) == []
    with contextlib.suppress(WorkflowFailureError):
        await client.get_workflow_handle(run_id).result()
    again = await stack.reply(await stack.command(f"cancel {run_id}", user="U0ADMIN"))
    assert again["text"].startswith(f"Run <http://skyrun.test/runs/{run_id}|{run_id}> is not")


async def test_a_slack_outage_never_fails_the_run_or_leaks_a_cluster(
    stack: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, PIPELINE)
    stack.slack.down = True
    # The front door still answers: nothing it does needs Slack's Web API.
    await stack.command(f"{repo}@main", user="U0ALICE")

    async def started() -> str:
        while not (found := await stack.runs.list_runs(repo=repo)):
            await asyncio.sleep(0.1)
        return found[0].run_id

    run_id = await asyncio.wait_for(started(), 30)
    # The outcome is published before the (still retrying) reporters finish.
    progress = await wait_finished(stack.runs, run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.metrics == {"loss": 1.0}
    assert progress.clusters_up == []
    assert clusters_left(stack.settings) == []
    assert stack.slack.calls_to("chat.postMessage")  # it tried
    assert stack.slack.messages == {}
    await terminate_runs(client, repo)


async def test_push_runs_are_announced_in_the_pipelines_notify_channel(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    files = {
        **PIPELINE,
        ".skyrun.yaml": "on: {push: [main]}\nnotify: {slack: '#ml-runs'}\n"
        + PIPELINE[".skyrun.yaml"],
    }
    path = git_repo(files, name="pushed")
    outcome = await stack.runs.start(
        request_for(
            path,
            trigger=Trigger.PUSH,
            requested_by="octocat",
            check_push_filter=True,
        )
    )
    message = await stack.finished(outcome.run_id)
    assert message.channel == stack.slack.channel_id("#ml-runs")
    assert [m.ts for m in stack.slack.top_level("#ml-runs")] == [message.ts]
    assert all(c.args["channel"] == message.channel for c in stack.slack.calls_to("chat.update"))
    text = message_text(message)
    assert "push by octocat" in text and "— succeeded" in text
    assert stack.final_reply(message).startswith(":white_check_mark: Run succeeded")
    assert stack.slack.responses() == []


async def test_a_failed_slack_call_is_retried_without_duplicates(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, PIPELINE)
    stack.slack.fail("chat.postMessage", "internal_error", matching=lambda a: "thread_ts" in a)
    stack.slack.fail("chat.update", "internal_error")
    run_id = await stack.start(f"{repo}@main")
    message = await stack.finished(run_id)
    assert stack.slack.failures == {"chat.postMessage": [], "chat.update": []}
    assert len(stack.slack.top_level()) == 1
    replies = [m.text for m in stack.slack.thread(message.ts)]
    assert len(replies) == len(set(replies)) == 3  # prep, train, final: each once
    assert "— succeeded" in message_text(message)


def _report(progress: RunProgress, handles: dict[str, str] | None = None) -> ReportInput:
    request = RunRequest(
        repo="acme/widgets",
        clone_url="https://github.com/acme/widgets.git",
        ref="main",
        trigger=Trigger.SLACK,
        requested_by="U0ALICE",
        slack=SlackTarget("C0RUNS", "U0ALICE", ""),
    )
    return ReportInput("slack", progress.run_id, request, progress, handles or {})


def _finished_run() -> RunProgress:
    return RunProgress(
        run_id="widgets-1a2b3c4d5e",
        repo="acme/widgets",
        ref="main",
        commit="",
        trigger=Trigger.SLACK,
        requested_by="U0ALICE",
        state=RunState.SUCCEEDED,
        stages=[StageProgress("train", "train", StageState.SUCCEEDED, duration_s=3)],
    )


async def test_a_retried_attempt_resumes_from_what_the_failed_one_posted(
    slack: FakeSlack, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url
    )
    reporter = SlackReporter(settings)
    # The message is posted, then its first thread reply fails: the attempt fails.
    slack.fail("chat.postMessage", "internal_error", matching=lambda a: "thread_ts" in a)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    with pytest.raises(ApplicationError) as caught:
        await env.run(reporter.report, _report(_finished_run()))
    assert not caught.value.non_retryable
    [posted] = slack.top_level()
    assert beats[-1] == {"channel": "C0RUNS", "ts": posted.ts}

    # Temporal hands the next attempt the same input plus the last heartbeat.
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[beats[-1]])
    handles = await env.run(reporter.report, _report(_finished_run()))
    assert slack.top_level() == [posted]
    assert posted.edits == 1
    assert len(slack.thread(posted.ts)) == 2
    assert handles == {
        "channel": "C0RUNS",
        "ts": posted.ts,
        "replied:stage:train": "1",
        "replied:final": "1",
    }


async def test_the_baseline_is_looked_up_once_and_kept_with_the_handles(
    slack: FakeSlack,
    make_settings: Callable[..., Settings],
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url
    )
    asked: list[str] = []
    earlier = Baseline("widgets-0000000000", "f" * 40, "main", {"loss": 0.5})

    async def of(self: Baselines, progress: RunProgress) -> Baseline | None:
        asked.append(f"{progress.run_id} in {self.task_queue}")
        return earlier

    monkeypatch.setattr(Baselines, "of", of)
    reporter = SlackReporter(settings, temporal=client)
    run = _finished_run()
    run.stages[0].metrics = {"loss": 0.4}
    env = ActivityEnvironment()
    handles = await env.run(reporter.report, _report(run))
    assert Baseline.loads(handles[HANDLE]) == earlier
    await env.run(reporter.report, _report(run, handles))  # a later (or retried) report

    assert asked == [f"{run.run_id} in {settings.temporal_task_queue}"]
    [message] = slack.top_level()
    text = message_text(message)
    assert "`loss` *0.4* (-0.1 (-20.0%) vs last success)" in text
    assert "the last successful run of `main`" in text


async def test_errors_no_retry_can_fix_fail_at_once_and_deleted_messages_come_back(
    slack: FakeSlack, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url
    )
    reporter = SlackReporter(settings)
    slack.fail("chat.postMessage", "invalid_auth")
    with pytest.raises(ApplicationError) as caught:
        await reporter.report(_report(_finished_run()))
    assert caught.value.non_retryable
    assert caught.value.message == "Slack API error: invalid_auth"

    gone = {"channel": "C0RUNS", "ts": "1.000001", "replied:stage:train": "1"}
    handles = await reporter.report(_report(_finished_run(), gone))
    [posted] = slack.top_level()
    assert handles["ts"] == posted.ts != "1.000001"
    assert [m.text.split(" ")[0] for m in slack.thread(posted.ts)] == ["<@U0ALICE>"]


async def test_a_channel_the_bot_is_not_in_gets_told_privately(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, PIPELINE)
    stack.slack.not_in_channel.add("C0PRIVATE")
    key = await stack.command(f"{repo}@main", channel="C0PRIVATE")
    await stack.slack.wait_for(lambda: len(stack.slack.responses(key)) >= 3, 90, "the outcome")
    # The bot's "started" and the worker's notices race; each comes once.
    by_text = {reply["text"]: reply for reply in stack.slack.responses(key)}
    assert len(by_text) == 3
    started = next(t for t in by_text if STARTED_RE.search(t))
    run_id = STARTED_RE.search(started).group(1)  # type: ignore[union-attr]
    blocked = texts.NOT_IN_CHANNEL.format(
        error="not_in_channel", url=f"http://skyrun.test/runs/{run_id}", run_id=run_id
    )
    assert blocked in by_text
    outcome = by_text[f"skyrun {repo}@main: succeeded"]
    assert outcome["response_type"] == "ephemeral"
    assert "— succeeded" in message_text(Message("C", "1", outcome["text"], outcome["blocks"]))
    assert stack.slack.messages == {}


async def test_no_secret_reaches_slack_even_where_a_cut_would_split_one(
    slack: FakeSlack, make_settings: Callable[..., Settings], client: Client
) -> None:
    settings = make_settings(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        TEMPORAL_API_KEY="temporal-key-for-masking",
    )
    masker = Masker.from_settings(settings)
    learned = "ghs_learned_installation_token"
    masker.add(learned)  # as GitHub auth does for the tokens it mints
    secrets = [BOT_TOKEN, SIGNING_SECRET, "temporal-key-for-masking", learned]
    failed = StageProgress(
        "train",
        "train",
        StageState.FAILED,
        duration_s=3,
        exit_code=1,
        error=f"boom {learned}",
        report=f"| token | {BOT_TOKEN} |",
        metrics={learned: 1.0},
        # The reply keeps the last TAIL_CHARS of the tail: its cut falls inside a secret.
        log_tail=["x" * 100, SIGNING_SECRET + "y" * (TAIL_CHARS - len(SIGNING_SECRET) // 2)],
    )
    progress = dataclasses.replace(
        _finished_run(),
        state=RunState.FAILED,
        error=f"stage train failed: temporal-key-for-masking {learned}",
        stages=[failed],
    )
    reporter = SlackReporter(settings, masker=masker, temporal=client)
    await reporter.report(_report(progress))

    [posted] = slack.top_level()
    assert len(slack.thread(posted.ts)) == 2
    sent = [str(call.args) for call in slack.calls]
    assert "***" in message_text(posted) and any("boom ***" in text for text in sent)
    for text in sent:
        for secret in secrets:
            assert secret[-8:] not in text, secret
