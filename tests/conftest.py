"""Shared fixtures: one real Temporal dev server per session, fresh task queues per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from worker.devserver import temporal_binary
from worker.runcontrol import RunControl
from worker.settings import Settings, load_settings
from worker.temporal import ensure_search_attributes

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REPO = REPO_ROOT / "examples" / "mock-training"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_log_level="error",
    )
    await ensure_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def unsandboxed(request: pytest.FixtureRequest) -> bool:
    """Tests marked `host_processes` check a job's processes from the host by pid, which the
    local sandbox's PID namespace hides by design; the sandbox's own kill and cancel behaviour is
    tested with it on (tests/worker/backends/test_sandbox.py)."""
    return request.node.get_closest_marker("host_processes") is not None


@pytest.fixture
def make_settings(
    tmp_path: Path, task_queue: str, client: Client, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings for a test: its own data dir and task queue, pointed at the session's server."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "SKYRUN_DATA_DIR": tmp_path / "data",
            "TEMPORAL_TASK_QUEUE": task_queue,
            "TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "SKYRUN_PUBLIC_URL": "http://skyrun.test",
        }
        if unsandboxed(request):
            values["SKYRUN_LOCAL_SANDBOX"] = "off"
        # Tests signal their jobs through this directory (see `gate`), the one host path that
        # the local sandbox lets them see, read-only, as an operator would open a datasets dir.
        gates = tmp_path / "gates"
        gates.mkdir(exist_ok=True)
        values["SKYRUN_LOCAL_MOUNTS"] = str(gates)
        values.update(overrides)
        return load_settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[..., Path]:
    """Make a git repository from a dict of files; returns its path (commits on branch main)."""
    import subprocess

    def make(files: dict[str, str], name: str = "repo") -> Path:
        path = tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        env_args = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
        if not (path / ".git").exists():
            subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        for rel, text in files.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
        subprocess.run(
            ["git", "-C", str(path), *env_args, "commit", "-q", "--allow-empty", "-m", "change"],
            check=True,
        )
        return path

    return make


@pytest.fixture
def example_files() -> Iterator[dict[str, str]]:
    files = {
        str(p.relative_to(EXAMPLE_REPO)): p.read_text()
        for p in EXAMPLE_REPO.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    yield files


@pytest.fixture
async def control(client: Client, settings: Settings) -> AsyncIterator[RunControl]:
    """Run control with this test's workers (local backend) polling its task queue."""
    from worker.process import build_workers, running_workers

    async with running_workers(build_workers(client, settings)):
        yield RunControl(client, settings.temporal_task_queue)


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A file a test creates to let a waiting job go on (visible inside the local sandbox)."""
    (tmp_path / "gates").mkdir(exist_ok=True)
    return tmp_path / "gates" / "open"
