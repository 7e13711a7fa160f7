"""The run a finished run's metrics are compared with: the last successful run of the same branch.

Found through Temporal's visibility and the progress query (skyrun keeps no database).
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client

from worker.contract import RunProgress, RunRequest, RunState
from worker.runcontrol import RunControl
from worker.slack.blocks import Baseline

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 10.0
"""A query to a run whose worker is gone waits; the message goes out without a comparison."""


async def last_success(
    client: Client, request: RunRequest, progress: RunProgress
) -> Baseline | None:
    """The latest other successful run of this repository and branch that has metrics."""
    try:
        return await asyncio.wait_for(_find(client, request, progress), LOOKUP_TIMEOUT_S)
    except Exception as err:  # the comparison is a nicety: never fail a report for it
        log.warning("no metrics baseline for run %s: %s", progress.run_id, err)
        return None


async def _find(client: Client, request: RunRequest, progress: RunProgress) -> Baseline | None:
    runs = RunControl(client, "")
    branch = {"ref": progress.ref} if progress.ref else {"lane": request.lane}
    # Two, because this run may already be listed as succeeded.
    for summary in await runs.list_runs(
        limit=2, repo=progress.repo, state=RunState.SUCCEEDED.value, **branch
    ):
        if summary.run_id == progress.run_id:
            continue
        earlier = await runs.progress(summary.run_id)
        if earlier is not None and earlier.metrics:
            return Baseline(summary.run_id, earlier.metrics)
    return None
