"""`skyrun dev` as a newcomer runs it: embedded Temporal, worker and bot, the example, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from tests.conftest import EXAMPLE_REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_runs_the_example_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    bot_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SKYRUN_"))} | {
        "SKYRUN_DATA_DIR": str(tmp_path / "data"),
        "SKYRUN_PORT": str(bot_port),
        "SKYRUN_TEMPORAL_PORT": str(temporal_port),
        "SKYRUN_TEMPORAL_UI_PORT": str(ui_port),
        "SKYRUN_PUBLIC_URL": f"http://127.0.0.1:{bot_port}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "dev",
        "--example",
        str(EXAMPLE_REPO),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:

        async def read_until_done() -> None:
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "skyrun dev exited early:\n" + "".join(lines)
                lines.append(line)
                if "The stack keeps running" in line:
                    return

        await asyncio.wait_for(read_until_done(), 120)
        out = "".join(lines)
        assert f"http://127.0.0.1:{bot_port}/runs" in out
        assert "succeeded" in out and "metric accuracy = 0.8" in out
        run_id = next(line.split()[2] for line in lines if line.startswith("example run "))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bot_port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            run = (await http.get(f"/api/runs/{run_id}")).json()
            assert run["state"] == "succeeded"
            log = await http.get(f"/runs/{run_id}/logs/eval")
            assert "Metric - accuracy" in log.text
        assert (tmp_path / "data" / "temporal.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert not port_open(temporal_port) and not port_open(bot_port)


async def test_check_reports_each_service(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SKYRUN_"))}
    env |= {"TEMPORAL_ADDRESS": "127.0.0.1:1", "GITHUB_TOKEN": "", "SLACK_BOT_TOKEN": ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "check",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 1
    assert "temporal   FAIL  127.0.0.1:1" in text
    assert "github     off" in text and "slack      off" in text
    assert "webhook    off" in text
