"""Fixtures of the GitHub tests: the whole stack against the shared fake GitHub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.worker.github.stack import Stack, github_stack
from worker.settings import Settings


@pytest.fixture
async def stack(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Stack]:
    async with github_stack(client, make_settings, tmp_path) as running:
        yield running
