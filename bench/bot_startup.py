"""`skyrun bot`: process start to /healthz answering (target < 1 s; the bot never imports sky)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_start() -> tuple[float, bool]:
    port = free_port()
    env = {**os.environ, "SKYRUN_PORT": str(port), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "bot"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    elapsed = time.perf_counter() - started
                    break
            except httpx.HTTPError:
                time.sleep(0.01)
            if time.perf_counter() - started > 30:
                raise SystemExit("bot did not answer /healthz within 30 s")
        probe = [
            sys.executable,
            "-c",
            "import sys, bot.app, bot.cli; print('sky' in sys.modules)",
        ]
        sky_loaded = subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "True"
        return elapsed, sky_loaded
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    results = [one_start() for _ in range(ROUNDS)]
    times = [t for t, _ in results]
    print(f"skyrun bot: process start to /healthz 200, {ROUNDS} rounds")
    print(
        f"  median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s"
        "   (target < 1 s)"
    )
    print(f"  sky imported by the bot: {any(s for _, s in results)}")


if __name__ == "__main__":
    main()
