"""Fixtures of the pages' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client

from tests.bot.pages.helpers import Stack, bot_stack
from worker.settings import Settings


@pytest.fixture
async def stack(client: Client, settings: Settings) -> AsyncIterator[Stack]:
    """Workers and the bot on the test's task queue."""
    async with bot_stack(client, settings) as running:
        yield running
