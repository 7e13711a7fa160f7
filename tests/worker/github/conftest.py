"""Fixtures of the GitHub tests: the fake GitHub holding REPO, and the whole stack against one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.fakes.github import FakeGitHub
from tests.worker.github.stack import REPO, Stack, github_stack
from worker.settings import Settings


@pytest.fixture
async def stack(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Stack]:
    async with github_stack(client, make_settings, tmp_path) as running:
        yield running


@pytest.fixture
def private_repo() -> bool:
    """Whether `fake`'s REPO is private; a module that needs one overrides this fixture."""
    return False


@pytest.fixture
def fake(tmp_path: Path, private_repo: bool) -> Iterator[FakeGitHub]:
    """A fake GitHub holding REPO, with a README on main."""
    with FakeGitHub(tmp_path / "github") as github:
        github.add_repo(REPO, {"README.md": "hi"}, private=private_repo)
        yield github
