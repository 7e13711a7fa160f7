"""Retry from the failed stage in Slack end to end: the Retry button of a failed run's message and
`/skyrun retry RUN`, through the bot to a real worker (local backend) and back to the fake Slack."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from bot.slack import texts
from tests.fakes.slack import FakeSlack, block_action, buttons, deliver, message_text
from tests.worker.slack.stack import Stack, slack_stack
from worker.settings import Settings
from worker.slack import texts as message_texts
from worker.slack.blocks import ACTION_CANCEL, ACTION_RETRY

FLAKY = {
    ".skyrun.yaml": (
        "stages:\n"
        "  - {name: prep, task: prep.yaml}\n"
        "  - {name: train, task: train.yaml, cluster: train}\n"
        "  - {name: eval, task: eval.yaml, cluster: train}\n"
    ),
    "prep.yaml": "run: |\n  echo x >> $DATA_BUCKET_URL/prep.count\n  echo '::metric rows=3'\n",
    "train.yaml": "run: |\n  echo x >> $DATA_BUCKET_URL/train.count\n",
    "eval.yaml": (
        "run: |\n"
        "  [ -f $DATA_BUCKET_URL/eval.tried ] || { touch $DATA_BUCKET_URL/eval.tried; exit 4; }\n"
        "  echo '::metric accuracy=0.9'\n"
    ),
}
RETRIED_RE = re.compile(r"from its failed stage as <[^|]+\|([^>]+)>")


@pytest.fixture
async def stack(
    client: Client,
    make_settings: Callable[..., Settings],
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stack]:
    async with slack_stack(client, make_settings, slack, tmp_path, monkeypatch) as running:
        yield running


def executions(stack: Stack, stage: str) -> int:
    (path,) = (stack.settings.data_path / "buckets").glob(f"*/{stage}.count")
    return len(path.read_text().splitlines())


async def test_the_retry_button_and_command_retry_once_for_allowed_users(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, FLAKY)
    first = await stack.start(f"{repo}@main", user="U0ALICE")
    failed = await stack.finished(first)
    assert "— failed" in message_text(failed)
    assert message_texts.RETRY_HINT.format(run_id=first) in message_text(failed)
    found = buttons(failed)
    assert ACTION_CANCEL not in found and found[ACTION_RETRY]["value"] == first
    button = found[ACTION_RETRY]

    # Someone outside SKYRUN_SLACK_ALLOWED_USERS may not start runs, so may not retry.
    stranger = stack.slack.response_url("stranger")
    clicked = block_action(button, response_url=stranger, message=failed, user="U0MALLORY")
    assert (await deliver(stack.http, clicked)).status_code == 200
    await stack.slack.wait_for(lambda: stack.slack.responses("stranger"), 30, "the denial")
    [denial] = stack.slack.responses("stranger")
    assert denial["response_type"] == "ephemeral"
    assert denial["text"] == texts.DENIED_USER.format(user="U0MALLORY")

    starter = stack.slack.response_url("starter")
    clicked = block_action(button, response_url=starter, message=failed, user="U0ALICE")
    assert (await deliver(stack.http, clicked)).status_code == 200
    await stack.slack.wait_for(lambda: stack.slack.responses("starter"), 30, "the retry")
    [retried] = stack.slack.responses("starter")
    assert retried["response_type"] == "in_channel" and retried["thread_ts"] == failed.ts
    assert "`train`, `eval` run again, `prep` reused" in retried["text"]
    found_id = RETRIED_RE.search(retried["text"])
    assert found_id is not None and found_id.group(1) == f"{first}-retry"
    retry_id = found_id.group(1)

    done = await stack.finished(retry_id)
    text = message_text(done)
    assert "— succeeded" in text
    assert f"retry of <http://skyrun.test/runs/{first}|{first}>" in text
    assert f"`prep` reused from <http://skyrun.test/runs/{first}|{first}>" in text
    assert "`train` succeeded" in text and "runs again: shares cluster train with eval" in text
    assert "Runs again: `train` (shares cluster train with eval, which failed), `eval`" in text
    assert ACTION_RETRY not in buttons(done)
    assert (executions(stack, "prep"), executions(stack, "train")) == (1, 2)

    # Again, by command: the run was retried already; the retry itself succeeded.
    reply = await stack.reply(await stack.command(f"retry {first}", user="U0ADMIN"))
    assert reply["text"] == texts.ALREADY_RETRIED.format(
        old_url=f"http://skyrun.test/runs/{first}",
        old_id=first,
        url=f"http://skyrun.test/runs/{retry_id}",
        run_id=retry_id,
    )
    reply = await stack.reply(await stack.command(f"retry {retry_id}", user="U0ADMIN"))
    assert reply["text"].startswith(":no_entry: Nothing was retried: run ")
    assert "succeeded: every stage passed" in reply["text"]
    reply = await stack.reply(await stack.command("retry nope-123", user="U0ADMIN"))
    assert reply["text"] == texts.UNKNOWN_RUN.format(run_id="nope-123", command="/skyrun")
    assert executions(stack, "prep") == 1


async def test_retry_command_by_an_allowed_user_posts_the_retry_s_progress(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    repo = stack.repo(git_repo, FLAKY)
    first = await stack.start(f"{repo}@main", user="U0ALICE")
    await stack.finished(first)

    key = await stack.command(f"retry {first}", user="U0ADMIN", channel="C0OTHER")
    reply = await stack.reply(key)
    assert reply["text"].startswith(":recycle: <@U0ADMIN> retried run")
    done = await stack.finished(f"{first}-retry")
    assert done.channel == "C0OTHER"
    assert "Slack by <@U0ADMIN>" in message_text(done)
