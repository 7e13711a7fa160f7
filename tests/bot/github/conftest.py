"""Fixtures of the GitHub front-door tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bot.github.helpers import INSTALLATION, REPO
from tests.fakes.github import FakeGitHub


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    """The fake GitHub with REPO, installed as INSTALLATION (it shapes the deliveries)."""
    with FakeGitHub(tmp_path) as github:
        github.add_repo(REPO, {"README.md": "hi"})
        github.install(INSTALLATION, REPO)
        yield github
