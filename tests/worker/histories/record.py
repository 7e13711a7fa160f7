"""Record workflow histories for the replay test (tests/worker/test_replay.py).

Run it with the code whose histories must keep replaying, e.g. a release before a change:

    git worktree add /tmp/old <commit>
    cd /tmp/old && PYTHONPATH=/tmp/old /path/to/.venv/bin/python \
        /path/to/repo/tests/worker/histories/record.py /path/to/repo/tests/worker/histories/<tag>

It starts a Temporal dev server, a worker on the local backend and a few runs that cover the
workflow's paths (success, a failing stage, cancellation, a newer run superseding an older one),
and writes each run's history as JSON. With code that has warm clusters it also records a lane
coordinator tearing down two warm clusters whose time ended (`warm-expiry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from worker import coordinator
from worker.contract import RunRequest, Trigger, lane_for_branch
from worker.devserver import temporal_binary
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import load_settings
from worker.temporal import ensure_search_attributes

QUEUE = "replay-recorded"
"""The task queue the runs are recorded on: the Replayer's, with build id "recorded"
(tests/worker/test_replay.py), because runs derive their lane coordinator's id from it."""
PIPELINE = "stages:\n  - {name: prepare, task: prepare.yaml}\n  - {name: train, task: train.yaml}\n"


def repo_with(root: Path, train: str) -> tuple[Path, str]:
    root.mkdir(parents=True)
    (root / ".skyrun.yaml").write_text(PIPELINE)
    (root / "prepare.yaml").write_text("run: echo preparing\n")
    (root / "train.yaml").write_text(train)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return root, sha.stdout.strip()


def request(repo: Path, commit: str, lane: str = "") -> RunRequest:
    return RunRequest(
        repo=str(repo),
        clone_url=str(repo),
        ref="main",
        commit=commit,
        trigger=Trigger.CLI,
        requested_by="recorder",
        lane=lane or lane_for_branch(str(repo), "main"),
    )


async def finished(client: Client, run_id: str) -> None:
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(client.get_workflow_handle(run_id).result(), 120)


async def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
        client = env.client
        await ensure_search_attributes(client)
        settings = load_settings(
            _env_file=None,
            SKYRUN_DATA_DIR=root / "data",
            TEMPORAL_TASK_QUEUE=QUEUE,
            TEMPORAL_ADDRESS=client.service_client.config.target_host,
        )
        control = RunControl(client, QUEUE)
        runs: dict[str, str] = {}
        async with running_workers(build_workers(client, settings)):
            ok, sha = repo_with(root / "ok", "run: echo '::metric accuracy=0.9'\n")
            runs["succeeded"] = (await control.start(request(ok, sha))).run_id
            bad, sha = repo_with(root / "bad", "run: exit 3\n")
            runs["failed"] = (await control.start(request(bad, sha))).run_id
            for name in ("succeeded", "failed"):
                await finished(client, runs[name])

            slow, sha = repo_with(root / "slow", "run: sleep 300\n")
            runs["cancelled"] = (await control.start(request(slow, sha))).run_id
            await asyncio.sleep(3)
            await control.cancel(runs["cancelled"])
            await finished(client, runs["cancelled"])

            older, old_sha = repo_with(root / "older", "run: sleep 300\n")
            lane = lane_for_branch("lane-recorded", "main")
            runs["superseded"] = (await control.start(request(older, old_sha, lane))).run_id
            await asyncio.sleep(3)
            newer, new_sha = repo_with(root / "newer", "run: echo newer\n")
            runs["superseding"] = (await control.start(request(newer, new_sha, lane))).run_id
            for name in ("superseded", "superseding"):
                await finished(client, runs[name])
            if hasattr(coordinator, "WarmCluster"):
                runs["warm-expiry"] = await warm_expiry(client, settings.worker_queue)
        for name, run_id in runs.items():
            history = await client.get_workflow_handle(run_id).fetch_history()
            (out / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {run_id}")
        await env.shutdown()


async def warm_expiry(client: Client, queue: str) -> str:
    """A lane's coordinator holds a warm cluster until its time ends and downs it, twice."""
    lane = lane_for_branch("warm-recorded", "main")

    def warm(name: str) -> Any:
        now = datetime.now(UTC)
        until = (now + timedelta(seconds=2)).isoformat()
        return coordinator.WarmCluster(
            "gpu", name, "local:x", "recorded", queue, until, 1.0, lane, now.isoformat()
        )

    async def expired() -> None:
        while await handle.query(coordinator.QUERY_WARM, result_type=list[Any]):
            await asyncio.sleep(0.5)

    workflow_id = coordinator.lane_workflow_id(lane, QUEUE)
    handle = await client.start_workflow(
        coordinator.COORDINATOR_WORKFLOW,
        coordinator.CoordinatorState(lane),
        id=workflow_id,
        task_queue=QUEUE,
        start_signal=coordinator.SIGNAL_WARM,
        start_signal_args=[coordinator.Handover([warm("first")])],
    )
    await expired()
    await handle.signal(coordinator.SIGNAL_WARM, coordinator.Handover([warm("second")]))
    await expired()
    await asyncio.sleep(1)
    await handle.terminate("recorded")
    return workflow_id


if __name__ == "__main__":
    asyncio.run(record(Path(sys.argv[1])))
