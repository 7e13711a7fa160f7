"""The whole Slack path in one process: the fake Slack, the bot app, a real worker, real Temporal.

`https://github.com/OWNER/REPO.git` clone URLs are rewritten by git (`url.<base>.insteadOf`) to
local repositories, so Slack commands name GitHub repositories as users would.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from bot.app import create_app
from tests.bot.slack.helpers import ack_text, serving
from tests.fakes.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    Message,
    deliver,
    message_text,
    slash_command,
)
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings
from worker.slack import texts

PIPELINE = {
    ".skyrun.yaml": (
        "envs: {LOSS: '1'}\n"
        "stages:\n"
        "  - {name: prep, task: prep.yaml}\n"
        "  - {name: train, task: train.yaml}\n"
    ),
    "prep.yaml": "run: echo preparing\n",
    "train.yaml": (
        "run: |\n"
        '  echo "::metric loss=$LOSS"\n'
        "  echo ::report\n"
        '  echo "| loss | $LOSS |"\n'
        "  echo ::endreport\n"
    ),
}
STARTED_RE = re.compile(r"Started run <[^|]+\|([^>]+)>")
FINAL_RE = re.compile(r":[a-z_]+: Run [a-z ]+")


@dataclass
class Stack:
    settings: Settings
    http: httpx.AsyncClient
    runs: RunControl
    slack: FakeSlack
    github: Path

    def repo(self, git_repo: Callable[..., Path], files: dict[str, str]) -> str:
        """A new GitHub repository (as Slack users name it) holding `files` on main."""
        name = f"acme/w{uuid.uuid4().hex[:10]}"
        git_repo(files, name=str((self.github / f"{name}.git").relative_to(self.github.parent)))
        return name

    async def command(self, text: str, *, user: str = "U0ALICE", channel: str = "C0RUNS") -> str:
        """Type a slash command; returns the key of its response URL (see FakeSlack.responses)."""
        key = uuid.uuid4().hex[:12]
        body = slash_command(
            text, user=user, channel=channel, response_url=self.slack.response_url(key)
        )
        assert ack_text(await deliver(self.http, body))
        return key

    async def reply(self, key: str) -> dict[str, Any]:
        await self.slack.wait_for(lambda: self.slack.responses(key), 30, "the command's reply")
        return self.slack.responses(key)[0]

    async def start(self, text: str, **kwargs: str) -> str:
        reply = await self.reply(await self.command(text, **kwargs))
        found = STARTED_RE.search(reply["text"])
        assert found, reply
        return found.group(1)

    def message(self, run_id: str) -> Message | None:
        """The run's progress message (each names its run in the context line)."""
        marker = texts.CONTEXT_RUN.format(run_id=run_id)
        for message in self.slack.top_level():
            if marker in message_text(message):
                return message
        return None

    async def wait_message(self, run_id: str, check: Callable[[Message], bool]) -> Message:
        def ready() -> bool:
            message = self.message(run_id)
            return message is not None and check(message)

        await self.slack.wait_for(ready, 90, f"the message of {run_id}")
        message = self.message(run_id)
        assert message is not None
        return message

    def final_reply(self, message: Message) -> str:
        return next((m.text for m in self.slack.thread(message.ts) if FINAL_RE.search(m.text)), "")

    async def finished(self, run_id: str) -> Message:
        """The run's message once its final thread reply (the last thing reported) is posted."""
        return await self.wait_message(run_id, lambda m: bool(self.final_reply(m)))


@contextlib.asynccontextmanager
async def slack_stack(
    client: Client,
    make_settings: Callable[..., Settings],
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stack]:
    github = tmp_path / "github"
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{github}/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://github.com/")
    settings = make_settings(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SKYRUN_SLACK_ALLOWED_USERS="U0ALICE U0ADMIN",
    )
    runs = RunControl(client, settings.temporal_task_queue)
    async with (
        running_workers(build_workers(client, settings)),
        serving(create_app(settings, client)) as http,
    ):
        yield Stack(settings, http, runs, slack, github)
