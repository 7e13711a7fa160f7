"""skyrun against the seed's sequence on the local Slurm cluster: cold (clusters provisioned
just in time, target <= 0.7x) and warm (the lane's second run on warm clusters, <= 0.3x).

The Slurm example pipeline (examples/mock-training-slurm) runs, one after the other: driven
directly through the SDK as the seed did (launch, exec on the shared cluster, tail the job,
down), through skyrun cold (a Temporal dev server, an in-process worker with
SKYRUN_BACKEND=skypilot, start to result, every cluster downed) and through skyrun warm (the
same pipeline with `keep_warm_minutes: 1`: a first run leaves its clusters to the lane, the
second, timed, launches on them; then the bench waits for their minute to end). The cold run's
provisioning-ahead and idle cluster time are printed. All talk to one SkyPilot API server,
started here in a throwaway HOME unless SKYPILOT_API_SERVER_ENDPOINT is set. Needs
deploy/local-slurm/up.sh first. After one warm-up launch, rounds alternate whether the seed or
skyrun cold goes first (BENCH_ROUNDS, default 1; a round takes about ten minutes).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import WorkflowEnvironment

from worker.backends.skypilot import ENDPOINT_ENV
from worker.contract import RunProgress, RunResult
from worker.devserver import temporal_binary
from worker.manual import manual_request
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mock-training-slurm"
SLURM_CONFIG = Path(os.environ.get("SKYRUN_SLURM_CONFIG", "~/.slurm/config")).expanduser()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
COLD_TARGET = 0.7
WARM_TARGET = 0.3


@contextmanager
def api_server() -> Iterator[str]:
    """The endpoint to use: SKYPILOT_API_SERVER_ENDPOINT, or a server started for the bench."""
    if os.environ.get(ENDPOINT_ENV):
        yield os.environ[ENDPOINT_ENV]
        return
    sky_cli = shutil.which("sky", path=str(Path(sys.executable).parent)) or "sky"
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / ".slurm").mkdir()
        shutil.copy(SLURM_CONFIG, Path(home) / ".slurm" / "config")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
        env.update(
            HOME=home,
            SKYPILOT_DISABLE_USAGE_COLLECTION="1",
            SKYPILOT_API_SERVER_LOCAL_PORT=str(port),
        )
        subprocess.run(
            [sky_cli, "api", "start", "--port", str(port)], env=env, check=True, timeout=300
        )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            subprocess.run(
                [sky_cli, "check", "slurm"],
                env={**env, ENDPOINT_ENV: endpoint},
                check=True,
                timeout=300,
                stdout=subprocess.DEVNULL,
            )
            yield endpoint
        finally:
            subprocess.run([sky_cli, "api", "stop"], env=env, check=False, timeout=120)


def run_directly(sky: Any, workdir: Path, autostop_minutes: int) -> float:
    """The pipeline as a script would drive the SDK: launch / exec, follow the job, down."""
    pipeline = yaml.safe_load((workdir / ".skyrun.yaml").read_text())
    stages = pipeline["stages"]
    run_id = f"direct-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    launched: set[str] = set()
    for index, stage in enumerate(stages):
        cluster = stage.get("cluster", stage["name"])
        name = f"bench-{run_id}-{cluster}"
        config = yaml.safe_load((workdir / stage["task"]).read_text())
        config["workdir"] = str(workdir)
        envs = {**{k: str(v) for k, v in (pipeline.get("envs") or {}).items()}}
        envs["SKYRUN_RUN_ID"] = run_id
        task = sky.Task.from_yaml_config(config, env_overrides=list(envs.items()))
        if cluster in launched:
            request = sky.exec(task, cluster_name=name)
        else:
            request = sky.launch(
                task,
                cluster_name=name,
                idle_minutes_to_autostop=autostop_minutes,
                down=True,
                _need_confirmation=False,
            )
            launched.add(cluster)
        job_id, _ = sky.stream_and_get(request, output_stream=io.StringIO())
        code = sky.tail_logs(name, job_id, follow=True, output_stream=io.StringIO())
        if code != 0:
            raise RuntimeError(f"stage {stage['name']} failed ({code})")
        if all(s.get("cluster", s["name"]) != cluster for s in stages[index + 1 :]):
            sky.stream_and_get(sky.down(name), output_stream=io.StringIO())
    return time.perf_counter() - started


def warm_up(sky: Any, workdir: Path) -> None:
    """One launch and down first: the node's first runtime setup fills uv's cache."""
    config = yaml.safe_load((workdir / "train.yaml").read_text())
    task = sky.Task.from_yaml_config({"resources": config["resources"], "run": "true"})
    name = f"bench-warmup-{uuid.uuid4().hex[:8]}"
    try:
        request = sky.launch(task, cluster_name=name, _need_confirmation=False)
        sky.stream_and_get(request, output_stream=io.StringIO())
    finally:
        sky.stream_and_get(sky.down(name), output_stream=io.StringIO())


async def run_through_skyrun(control: RunControl, repo: Path) -> tuple[float, RunProgress]:
    started = time.perf_counter()
    outcome = await control.start(await manual_request(str(repo), "", [], {}))
    handle = control.client.get_workflow_handle(outcome.run_id, result_type=RunResult)
    result = await handle.result()
    return time.perf_counter() - started, result.progress


def idle_s(progress: RunProgress) -> tuple[float, float]:
    """Of the run's clusters' time up: provisioning ahead of time, and idle (ready and waiting
    for the stage's needs, between stages, tearing down)."""
    ahead = sum(c.provision_s for c in progress.clusters)
    idle = sum(max(0.0, c.up_s - c.busy_s - c.provision_s) for c in progress.clusters)
    return ahead, idle


async def gone(control: RunControl, sky: Any) -> None:
    """Wait until the lane's warm clusters were torn down (their minute ended)."""
    while await control.warm_clusters() or [
        r for r in await asyncio.to_thread(sky.get, sky.status()) if r["name"].startswith("sr-")
    ]:
        await asyncio.sleep(5)


async def main() -> None:
    if not SLURM_CONFIG.is_file():
        sys.exit(f"{SLURM_CONFIG} is missing: run deploy/local-slurm/up.sh first")
    os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"
    with api_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ[ENDPOINT_ENV] = endpoint
        import sky

        repo = Path(tmp) / "repo"
        shutil.copytree(EXAMPLE, repo)
        warm_repo = Path(tmp) / "warm"
        shutil.copytree(EXAMPLE, warm_repo)
        with (warm_repo / ".skyrun.yaml").open("a") as pipeline:
            pipeline.write("keep_warm_minutes: 1\n")
        autostop = int(yaml.safe_load((repo / ".skyrun.yaml").read_text())["autostop_minutes"])
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary())
        await ensure_search_attributes(env.client)
        settings = load_settings(
            _env_file=None,
            SKYRUN_DATA_DIR=Path(tmp) / "data",
            TEMPORAL_TASK_QUEUE="bench-skypilot",
            SKYRUN_BACKEND="skypilot",
            SKYPILOT_API_SERVER_ENDPOINT=endpoint,
        )
        control = RunControl(env.client, settings.temporal_task_queue)
        times: dict[str, list[float]] = {"seed": [], "cold": [], "warm": []}
        idle: list[tuple[float, float]] = []
        try:
            async with running_workers(build_workers(env.client, settings)):
                await asyncio.to_thread(warm_up, sky, repo)
                for round_ in range(ROUNDS):
                    order = ["seed", "cold"] if round_ % 2 == 0 else ["cold", "seed"]
                    for which in order:
                        if which == "seed":
                            took = await asyncio.to_thread(run_directly, sky, repo, autostop)
                        else:
                            took, progress = await run_through_skyrun(control, repo)
                            idle.append(idle_s(progress))
                        times[which].append(took)
                        print(f"round {round_ + 1}: {which:5s} {took:.1f} s", flush=True)
                    # The lane's second run on its warm clusters (the first one leaves them).
                    await run_through_skyrun(control, warm_repo)
                    took, _ = await run_through_skyrun(control, warm_repo)
                    times["warm"].append(took)
                    print(f"round {round_ + 1}: warm  {took:.1f} s", flush=True)
                    await gone(control, sky)
        finally:
            await env.shutdown()
    seed, cold, warm = (statistics.median(times[k]) for k in ("seed", "cold", "warm"))
    ahead, waiting = (statistics.median(values) for values in zip(*idle, strict=True))
    print(f"Slurm example pipeline (preprocess -> train -> eval), median of {ROUNDS} round(s)")
    print(f"  the seed's sequence through the SkyPilot SDK:  {seed:.1f} s")
    print(f"  skyrun cold (train provisioned during preprocess): {cold:.1f} s = {cold / seed:.2f}x")
    print(f"    (target <= {COLD_TARGET}x)")
    print(f"  skyrun warm (the lane's second run):          {warm:.1f} s = {warm / seed:.2f}x")
    print(f"    (target <= {WARM_TARGET}x)")
    print(f"  cold run's clusters: {ahead:.1f} s provisioning ahead, {waiting:.1f} s idle")
    print("    (ready and waiting for needs, between stages, tearing down), summed over clusters")


if __name__ == "__main__":
    asyncio.run(main())
