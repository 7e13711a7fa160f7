"""End to end on a real one-node Slurm cluster (deploy/local-slurm): opt in with SKYRUN_SLURM_E2E=1.

`make test-slurm` stands the cluster up and runs this suite. One SkyPilot API server is started
for the session, in a throwaway HOME holding a copy of the Slurm client config, and this process
points its SDK at it before anything imports `sky`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from worker.backends.skypilot import CLUSTER_PREFIX, ENDPOINT_ENV
from worker.settings import Settings

OPT_IN_ENV = "SKYRUN_SLURM_E2E"
REPO_ROOT = Path(__file__).resolve().parents[2]
SLURM_EXAMPLE = REPO_ROOT / "examples" / "mock-training-slurm"
SLURM_CONFIG = Path(os.environ.get("SKYRUN_SLURM_CONFIG", "~/.slurm/config")).expanduser()
LOGIN_USER = os.environ.get("SKYRUN_SLURM_USER", "skyrun-slurm")
API_START_TIMEOUT_S = 180
# Managed jobs (`managed: true`): the jobs controller runs inside the API server (consolidation
# mode) rather than as a controller cluster of its own, which would not fit on the node's CPUs.
# Only for the managed-job tests, which run last: the controller's processes in the server take
# CPU the whole time, and every other test ran about a third slower with them.
MANAGED_TESTS = "test_managed_on_slurm.py"
SKY_CONFIG = "jobs:\n  controller:\n    consolidation_mode: true\n"
POLL_EVERY_S = 3.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = f"needs a local Slurm cluster: `make test-slurm` ({OPT_IN_ENV}=1)"
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slurm)
            if os.environ.get(OPT_IN_ENV) != "1":
                item.add_marker(skip)
    # Managed jobs last: the jobs controller's processes they start in the API server stay for the
    # session, and the node has only 2 CPUs for the other tests' clusters.
    items.sort(key=lambda item: item.path.name == MANAGED_TESTS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ApiServer:
    endpoint: str
    env: dict[str, str]
    """Environment for `sky` commands against this server (its HOME, its port)."""
    sky_cli: str
    home: Path
    port: int
    managed_jobs: bool = False
    """Whether the jobs controller runs in it (`with_managed_jobs`)."""

    def start(self) -> None:
        started = time.monotonic()
        done = subprocess.run(
            [self.sky_cli, "api", "start", "--port", str(self.port)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=API_START_TIMEOUT_S,
            check=False,
        )
        print(f"sky api start: {time.monotonic() - started:.1f} s")
        assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]

    def with_managed_jobs(self) -> None:
        """Restart it on the same port with the jobs controller inside (consolidation mode)."""
        if self.managed_jobs:
            return
        (self.home / ".sky").mkdir(exist_ok=True)
        (self.home / ".sky" / "config.yaml").write_text(SKY_CONFIG)
        self.cli("api", "stop", timeout=60)
        self.start()
        self.managed_jobs = True

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.sky_cli, *args],
            env={**self.env, ENDPOINT_ENV: self.endpoint},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def sky_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A local SkyPilot API server with Slurm enabled, for the whole session."""
    if not SLURM_CONFIG.is_file():
        pytest.fail(f"{SLURM_CONFIG} is missing: run deploy/local-slurm/up.sh first")
    sky_cli = shutil.which("sky", path=str(Path(sys.executable).parent))
    assert sky_cli, "the `sky` command is not installed next to this Python"
    home = tmp_path_factory.mktemp("skyhome")
    (home / ".slurm").mkdir()
    shutil.copy(SLURM_CONFIG, home / ".slurm" / "config")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
    env.update(
        HOME=str(home),
        SKYPILOT_DISABLE_USAGE_COLLECTION="1",
        SKYPILOT_API_SERVER_LOCAL_PORT=str(port),
    )
    server = ApiServer(f"http://127.0.0.1:{port}", env, sky_cli, home, port)
    try:
        server.start()
        checked = server.cli("check", "slurm", timeout=180)
        assert "Slurm: enabled" in _plain(checked.stdout + checked.stderr), checked.stdout[-2000:]
        # This process (the worker's activities and the tests' own SDK calls) talks to it.
        # Not SKYPILOT_API_SERVER_LOCAL_PORT: the SDK would then treat it as local and could
        # start a server of its own in the real HOME if this one died.
        os.environ[ENDPOINT_ENV] = server.endpoint
        os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"
        yield server
    finally:
        _down_leftovers(server)
        server.cli("api", "stop", timeout=60)
        os.environ.pop(ENDPOINT_ENV, None)


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _down_leftovers(server: ApiServer) -> None:
    """Safety net: a failed test must not leave Slurm jobs behind for the next one."""
    # Managed jobs first: their clusters belong to the jobs controller, not to `sky down`.
    if server.managed_jobs:
        server.cli("jobs", "cancel", "--all", "--yes", timeout=300)
    out = server.cli("status", "--all-users", timeout=120).stdout
    for line in _plain(out).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(CLUSTER_PREFIX):
            server.cli("down", "--yes", name, timeout=300)


@pytest.fixture(scope="session")
def sky(sky_api_server: ApiServer) -> Any:
    """The SkyPilot SDK, imported after this process was pointed at the session's server."""
    import sky as sdk

    return sdk


def skyrun_clusters(sky: Any) -> list[Any]:
    """Status records of every skyrun cluster the API server knows (any user, any state)."""
    return [r for r in sky.get(sky.status(all_users=True)) if r["name"].startswith(CLUSTER_PREFIX)]


def slurm_jobs(run_id: str = "") -> list[str]:
    """The login user's Slurm jobs (`squeue`: id, name, state), only the run's if given.

    A SkyPilot cluster on Slurm is one such job, named after the cluster (so after the run).
    """
    out = subprocess.run(
        ["squeue", "-h", "-u", LOGIN_USER, "-o", "%i %j %T"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    jobs = [line.strip() for line in out.splitlines() if line.strip()]
    return [job for job in jobs if run_id in job.split()[1]]


@dataclass
class Seen:
    """What a watcher saw of one cluster over a test."""

    statuses: list[str] = field(default_factory=list)
    last_up: tuple[int, bool] | None = None
    """(autostop minutes, down) of the last UP record seen."""
    resources: set[str] = field(default_factory=set)
    """Where SkyPilot says it runs (the launched resources' cloud)."""


class ClusterWatch:
    """Polls `sky status` in the background, so a test can say what every cluster looked like."""

    def __init__(self, sky: Any) -> None:
        self._sky = sky
        self.seen: dict[str, Seen] = {}
        self.jobs_seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for r in skyrun_clusters(self._sky):
                    seen = self.seen.setdefault(r["name"], Seen())
                    status = str(getattr(r["status"], "value", r["status"]))
                    if not seen.statuses or seen.statuses[-1] != status:
                        seen.statuses.append(status)
                    if status == "UP":
                        seen.last_up = (int(r["autostop"]), bool(r["to_down"]))
                    launched = getattr(r["handle"], "launched_resources", None)
                    seen.resources.add(str(getattr(launched, "cloud", "")))
                self.jobs_seen.update(job.split()[1] for job in slurm_jobs())
            except Exception as exc:  # keep watching; the test decides what matters
                self.errors.append(repr(exc))
            self._stop.wait(POLL_EVERY_S)

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def watch(sky: Any) -> Iterator[ClusterWatch]:
    with ClusterWatch(sky) as w:
        yield w


@pytest.fixture
def slurm_settings(make_settings: Callable[..., Settings], sky_api_server: ApiServer) -> Settings:
    return make_settings(
        SKYRUN_BACKEND="skypilot", SKYPILOT_API_SERVER_ENDPOINT=sky_api_server.endpoint
    )


@pytest.fixture
def slurm_example_files() -> dict[str, str]:
    return {
        str(p.relative_to(SLURM_EXAMPLE)): p.read_text()
        for p in SLURM_EXAMPLE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
