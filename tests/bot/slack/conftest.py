"""Fixtures of the Slack front-door tests: the fake Slack, the bot over HTTP, a fresh repository."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from temporalio.client import Client

from bot.app import create_app
from tests.bot.slack.helpers import serving, terminate_runs
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from worker.settings import Settings


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def repo(client: Client) -> str:
    return f"acme/w{uuid.uuid4().hex[:10]}"


@pytest.fixture
def slack_settings(
    make_settings: Callable[..., Settings], slack: FakeSlack
) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
async def bot(
    client: Client, slack_settings: Callable[..., Settings], repo: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(slack_settings(), client)) as http:
        yield http
    await terminate_runs(client, repo)
