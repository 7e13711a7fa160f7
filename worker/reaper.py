"""At worker start, remove the local clusters and checkouts of runs that are no longer running.

A run normally tears its clusters down itself. What it cannot reach is left here: a run that was
terminated (no teardown at all), or one whose pinned worker was gone for good when it closed.
The jobs on such clusters are already dead (they die with their worker); this removes the
directories, so a local cluster never outlives its run by more than a worker restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from temporalio.client import Client

from worker.backends.local import LocalBackend, list_clusters
from worker.contract import WORKFLOW_NAME

log = logging.getLogger(__name__)

MIN_AGE_S = 600.0
"""Younger entries are left alone: their run may be too new for Temporal's visibility to list."""


async def running_run_ids(client: Client) -> set[str]:
    query = f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Running'"
    return {execution.id async for execution in client.list_workflows(query)}


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
) -> list[str]:
    """Remove what runs that are over left under `data_path`; returns what was removed."""
    clusters_dir = data_path / "clusters"
    checkouts_dir = data_path / "checkouts"
    clusters = list_clusters(clusters_dir)
    checkouts = sorted(p.name for p in checkouts_dir.iterdir()) if checkouts_dir.is_dir() else []
    if not clusters and not checkouts:
        return []
    running = await running_run_ids(client)

    def old(path: Path) -> bool:
        return now() - path.stat().st_mtime >= min_age_s

    removed = []
    backend = LocalBackend(clusters_dir)
    for name in clusters:
        if not belongs_to_any(name, running) and old(clusters_dir / name):
            await backend.down(name)  # also kills a job still recorded there
            removed.append(f"cluster {name}")
    for run_id in checkouts:
        path = checkouts_dir / run_id
        if run_id not in running and old(path):
            await asyncio.to_thread(shutil.rmtree, path, True)
            removed.append(f"checkout {run_id}")
    return removed
