"""Real `skyrun bot` / `skyrun worker` processes against the session's Temporal, as deployed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SKYRUN = [sys.executable, "-m", "bot.cli"]
WORKER_ID_ENV = "SKYRUN_TEST_WORKER"
"""Set in each test worker's environment; the local backend passes it on to the tasks it runs."""
STARTUP_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    port: int
    log: Path
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Fleet:
    """Processes sharing one Temporal, task queue and log store; all stopped when the test ends."""

    root: Path
    temporal: str
    task_queue: str
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TEMPORAL_", "SKYRUN_", "GITHUB_", "SLACK_", "SKYPILOT_"))
        }
        return {
            **inherited,
            "TEMPORAL_ADDRESS": self.temporal,
            "TEMPORAL_TASK_QUEUE": self.task_queue,
            "SKYRUN_LOG_DIR": str(self.log_dir),
            "SKYRUN_PUBLIC_URL": "http://skyrun.test",
            **self.env,
            **extra,
        }

    async def _spawn(self, name: str, command: str, port: int, env: dict[str, str]) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *SKYRUN,
                command,
                cwd=self.root,
                env=self._env(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        proc = Proc(name, process, port, log)
        self.procs.append(proc)
        return proc

    async def worker(self, name: str, data_dir: Path, worker_id: int) -> Proc:
        """A worker with its own probe port; returns once /readyz says it polls Temporal."""
        port = free_port()
        env = {
            "SKYRUN_DATA_DIR": str(data_dir),
            "SKYRUN_WORKER_METRICS_PORT": str(port),
            WORKER_ID_ENV: str(worker_id),
        }
        proc = await self._spawn(name, "worker", port, env)
        proc.data_dir = data_dir
        await self.wait_ready(proc)
        return proc

    async def bot(self, name: str, data_dir: Path) -> Proc:
        port = free_port()
        env = {"SKYRUN_DATA_DIR": str(data_dir), "SKYRUN_PORT": str(port)}
        proc = await self._spawn(name, "bot", port, env)
        await self.wait_ready(proc)
        return proc

    async def wait_ready(self, proc: Proc) -> None:
        deadline = asyncio.get_running_loop().time() + STARTUP_S
        async with httpx.AsyncClient(base_url=proc.url, timeout=2) as http:
            while True:
                assert proc.process.returncode is None, f"{proc.name} exited:\n{proc.output()}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                assert asyncio.get_running_loop().time() < deadline, proc.output()
                await asyncio.sleep(0.2)

    async def stop(self, proc: Proc, sig: signal.Signals, timeout: float = 90) -> int:
        if proc.process.returncode is None:
            proc.process.send_signal(sig)
        return await asyncio.wait_for(proc.process.wait(), timeout)

    async def close(self) -> None:
        """SIGTERM everything still running (idle processes exit at once), SIGKILL stragglers."""
        running = [proc for proc in self.procs if proc.process.returncode is None]
        for proc in running:
            proc.process.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await asyncio.wait_for(proc.process.wait(), 15)
            except TimeoutError:
                proc.process.send_signal(signal.SIGKILL)
                await proc.process.wait()


@contextlib.asynccontextmanager
async def fleet(root: Path, temporal: str, task_queue: str, **env: str) -> AsyncIterator[Fleet]:
    root.mkdir(parents=True, exist_ok=True)
    running = Fleet(root, temporal, task_queue, root / "logs", dict(env))
    try:
        yield running
    finally:
        await running.close()
