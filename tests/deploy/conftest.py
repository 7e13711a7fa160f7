"""Shared by the deploy checks: where deploy/ is, its tools, and how long a worker needs to stop."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.conftest import REPO_ROOT
from worker.backends.local import LocalBackend
from worker.process import build_workers
from worker.settings import Settings

DEPLOY = REPO_ROOT / "deploy"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
MARGIN_S = 10
"""Slack for the last heartbeat, the completion RPC and process exit after the cancellation."""


def tool(name: str) -> str:
    """A command-line tool installed by a test dependency (beside this interpreter), or on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def listed_names() -> set[str]:
    """Every name .env.example lists (NAME=...)."""
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            names.add(line.split("=", 1)[0])
    return names


@pytest.fixture
async def stop_needs_s(client: Client, make_settings: Callable[..., Settings]) -> float:
    """Seconds a worker needs between SIGTERM and exit with a stage running, and then some.

    It gives running activities `graceful_shutdown_timeout`, then cancels them, and the local
    backend takes up to `kill_grace_seconds` to stop a job that ignores SIGTERM.
    """
    settings = make_settings()
    config = build_workers(client, settings)[0].config()
    grace = config.get("graceful_shutdown_timeout")
    assert grace is not None
    kill = LocalBackend(settings.data_path / "clusters").kill_grace_seconds
    return grace.total_seconds() + kill + MARGIN_S
