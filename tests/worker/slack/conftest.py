"""Fixtures of the Slack tests: the fake Slack, and the whole stack against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.fakes.slack import FakeSlack
from tests.worker.slack.stack import Stack, slack_stack
from worker.settings import Settings


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


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
