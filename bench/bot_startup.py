"""`skyrun bot`: process start to /healthz answering, against the floor of its dependencies.

The floor is a bare `python -c "import temporalio.client, starlette, uvicorn, pydantic_settings"`
measured in the same run (same machine, same load); target: the bot within 1.3x of it, which it
reaches by importing Jinja, Markdown and Slack's Bolt only when a page is rendered or Slack is
configured (and never `sky`).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
FLOOR_IMPORTS = "import temporalio.client, starlette, uvicorn, pydantic_settings"
TARGET_RATIO = 1.3
DEFERRED = ("sky", "jinja2", "markdown_it", "slack_bolt")
"""Modules the started bot must not have imported (Slack is not configured in this bench)."""
PROBE = (
    "import sys\n"
    "from bot.server import uvicorn_config\n"
    "from worker.settings import load_settings\n"
    "uvicorn_config(load_settings(_env_file=None))\n"
    f"print(' '.join(m for m in {DEFERRED!r} if m in sys.modules))\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_env(port: int) -> dict[str, str]:
    env = {**os.environ, "SKYRUN_PORT": str(port), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env.pop(name, None)
    return env


def one_start() -> float:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "bot"],
        env=bot_env(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                time.sleep(0.01)
            if time.perf_counter() - started > 30:
                raise SystemExit("bot did not answer /healthz within 30 s")
    finally:
        proc.terminate()
        proc.wait(10)


def one_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR_IMPORTS], check=True)
    return time.perf_counter() - started


def deferred_loaded() -> list[str]:
    """Which of DEFERRED the bot's modules import when it builds its app (none, if it is right)."""
    env = bot_env(free_port())
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def summary(times: list[float]) -> str:
    return (
        f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s"
    )


def main() -> None:
    bot: list[float] = []
    floor: list[float] = []
    for _ in range(ROUNDS):
        # Interleaved, so a burst of load on the machine hits both alike.
        floor.append(one_floor())
        bot.append(one_start())
    ratio = statistics.median(bot) / statistics.median(floor)
    loaded = deferred_loaded()
    print(f"skyrun bot: process start to /healthz 200, {ROUNDS} rounds")
    print(f"  {summary(bot)}   (target < 1 s)")
    print(f"floor: python -c {FLOOR_IMPORTS!r}, {ROUNDS} rounds")
    print(f"  {summary(floor)}")
    print(f"  bot / floor (medians): {ratio:.2f}x   (target <= {TARGET_RATIO}x)")
    print(f"  imported by the bot before any page or Slack request: {', '.join(loaded) or 'none'}")
    print(f"  sky imported by the bot: {'sky' in loaded}")


if __name__ == "__main__":
    main()
