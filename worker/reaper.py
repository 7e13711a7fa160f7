"""At worker start, remove the local clusters and checkouts of runs that are no longer running.

A run normally tears its clusters down itself. What it cannot reach is left here: a run that was
terminated (no teardown at all), or one whose pinned worker was gone for good when it closed.
The jobs on such clusters are already dead (they die with their worker); this removes the
directories within seconds of the start, so a local cluster never outlives its run by more than a
worker restart, and says so in the log of the stage that last used the cluster.

Whether a run is over is asked of Temporal per run (describe: strongly consistent), never read
from visibility, so a sibling worker's brand-new run on a shared data dir is never taken for
over. The local backend records each cluster's run next to it (`<cluster>.run`); only clusters of
an older skyrun, without that record, fall back to visibility and are left alone while young.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from worker.backends.local import LocalBackend, list_clusters, read_owner
from worker.contract import WORKFLOW_NAME
from worker.logstore import LogStore

log = logging.getLogger(__name__)

MIN_AGE_S = 600.0
"""Younger clusters without a recorded run are left alone: visibility may not list their run yet."""

REAPED_NOTE = (
    "[skyrun] cluster {cluster} was removed when worker {worker} started again at {time}: "
    "its run is over ({status}); nothing of it runs any more\n"
)


async def running_run_ids(client: Client) -> set[str]:
    query = f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Running'"
    return {execution.id async for execution in client.list_workflows(query)}


async def run_status(client: Client, run_id: str) -> str:
    """The run's status as Temporal has it now ("running", "failed", ... or "gone")."""
    try:
        desc = await client.get_workflow_handle(run_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return "gone"
        raise
    status = desc.status or WorkflowExecutionStatus.RUNNING
    return status.name.lower()


def _cluster_prefix(run_id: str) -> str:
    """The start of every cluster name `cluster_name_for(run_id, ...)` gives."""
    return re.sub(r"[^a-z0-9-]+", "-", f"sr-{run_id}-".lower())


def belongs_to_any(cluster: str, run_ids: Iterable[str]) -> bool:
    """Whether the cluster may be one of these runs' (names are cut at 60 characters)."""
    for run_id in run_ids:
        prefix = _cluster_prefix(run_id)
        size = min(len(prefix), len(cluster))
        if cluster[:size] == prefix[:size] or cluster == prefix.rstrip("-"):
            return True
    return False


async def reap(
    client: Client,
    data_path: Path,
    *,
    min_age_s: float = MIN_AGE_S,
    now: Callable[[], float] = time.time,
    logs_dir: Path | None = None,
    worker: str = "",
    bucket_idle_days: float | None = None,
    warm: Iterable[str] = (),
) -> list[str]:
    """Remove what runs that are over left under `data_path`; returns what was removed.

    `logs_dir` is the log store (default `<data>/logs`), where each removed cluster's last stage
    gets a note naming `worker` (default: this host); with `bucket_idle_days`, lane buckets idle
    that long go too. Clusters named in `warm` are held by their lane for its next run
    (`keep_warm_minutes`): their run is over, but they stay.
    """
    clusters_dir = data_path / "clusters"
    checkouts_dir = data_path / "checkouts"
    store = LogStore(logs_dir if logs_dir is not None else data_path / "logs")
    who = worker or socket.gethostname()
    backend = LocalBackend(clusters_dir)
    removed: list[str] = []
    if bucket_idle_days is not None:
        backend.bucket_idle_days = bucket_idle_days
        removed += [f"bucket {name}" for name in await asyncio.to_thread(backend.prune_buckets)]
    clusters = list_clusters(clusters_dir)
    checkouts = sorted(p.name for p in checkouts_dir.iterdir()) if checkouts_dir.is_dir() else []
    if not clusters and not checkouts:
        return removed
    statuses: dict[str, str] = {}

    async def status_of(run_id: str) -> str:
        if run_id not in statuses:
            statuses[run_id] = await run_status(client, run_id)
        return statuses[run_id]

    legacy_running: set[str] | None = None
    kept = set(warm)
    for name in clusters:
        if name in kept:
            continue
        owner = read_owner(clusters_dir, name)
        if owner is not None:
            status = await status_of(owner.run_id)
            if status == "running":
                continue  # ours (it will use or down it) or a live sibling's
            await backend.down(name)  # also kills a job still recorded there
            stamp = datetime.fromtimestamp(now(), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            note = REAPED_NOTE.format(cluster=name, worker=who, time=stamp, status=status)
            await asyncio.to_thread(_note, store, owner.run_id, owner.stage, note)
            removed.append(f"cluster {name}")
            continue
        if legacy_running is None:
            legacy_running = await running_run_ids(client)
        path = clusters_dir / name
        if not belongs_to_any(name, legacy_running) and now() - path.stat().st_mtime >= min_age_s:
            await backend.down(name)
            removed.append(f"cluster {name}")
    for run_id in checkouts:
        # A checkout is made by its run's own activity: the workflow exists, describe knows it.
        if await status_of(run_id) == "running":
            continue
        await asyncio.to_thread(shutil.rmtree, checkouts_dir / run_id, True)
        removed.append(f"checkout {run_id}")
    return removed


def _note(store: LogStore, run_id: str, stage: str, text: str) -> None:
    """Append `text` to the stage's log, so the run page and the log route say what happened."""
    try:
        path = store.path(run_id, stage)
    except ValueError:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
