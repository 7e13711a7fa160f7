"""skyrun's added wall time over the SkyPilot SDK, on the local Slurm cluster (target < 5%).

The Slurm example pipeline (examples/mock-training-slurm) runs twice per round, one after the
other: driven directly through the SDK (launch, exec on the shared cluster, tail the job, down)
and through skyrun (a Temporal dev server, an in-process worker with SKYRUN_BACKEND=skypilot,
start to result). Both talk to one SkyPilot API server, started here in a throwaway HOME unless
SKYPILOT_API_SERVER_ENDPOINT is set. Needs deploy/local-slurm/up.sh first.
After one warm-up launch, rounds alternate which goes first (BENCH_ROUNDS, default 2; a round
takes minutes).
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
from worker.devserver import temporal_binary
from worker.manual import manual_request
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mock-training-slurm"
SLURM_CONFIG = Path(os.environ.get("SKYRUN_SLURM_CONFIG", "~/.slurm/config")).expanduser()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
TARGET = 0.05


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


async def run_through_skyrun(control: RunControl, repo: Path) -> float:
    started = time.perf_counter()
    outcome = await control.start(await manual_request(str(repo), "", [], {}))
    await control.client.get_workflow_handle(outcome.run_id).result()
    return time.perf_counter() - started


async def main() -> None:
    if not SLURM_CONFIG.is_file():
        sys.exit(f"{SLURM_CONFIG} is missing: run deploy/local-slurm/up.sh first")
    os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"
    with api_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ[ENDPOINT_ENV] = endpoint
        import sky

        repo = Path(tmp) / "repo"
        shutil.copytree(EXAMPLE, repo)
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
        direct: list[float] = []
        skyrun: list[float] = []
        try:
            async with running_workers(build_workers(env.client, settings)):
                await asyncio.to_thread(warm_up, sky, repo)
                for round_ in range(ROUNDS):
                    order = ["direct", "skyrun"] if round_ % 2 == 0 else ["skyrun", "direct"]
                    for which in order:
                        if which == "direct":
                            took = await asyncio.to_thread(run_directly, sky, repo, autostop)
                            direct.append(took)
                        else:
                            took = await run_through_skyrun(control, repo)
                            skyrun.append(took)
                        print(f"round {round_ + 1}: {which:6s} {took:.1f} s", flush=True)
        finally:
            await env.shutdown()
    d, s = statistics.median(direct), statistics.median(skyrun)
    added = (s - d) / d
    print(f"Slurm example pipeline (2 launches, 1 exec, 2 downs), median of {ROUNDS} round(s)")
    print(f"  directly through the SkyPilot SDK: {d:.1f} s")
    print(f"  through skyrun (start to result):  {s:.1f} s")
    print(f"  skyrun's added wall time:          {s - d:+.1f} s = {added:+.1%}", end="")
    print(f"  (target < {TARGET:.0%})")


if __name__ == "__main__":
    asyncio.run(main())
