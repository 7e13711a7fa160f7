"""Progress, runs and baselines read from Temporal within deadlines, with small TTL caches."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache
from temporalio.service import RPCError

from bot.pages.logs import read_tail
from bot.pages.texts import DETAILS_UNAVAILABLE, QUERY_FAILED, QUERY_TIMED_OUT
from bot.pages.views import RunRow, RunView, build_row, build_view, progress_from_summary
from bot.state import BotState
from worker.baseline import Baseline, Baselines
from worker.contract import RunProgress, StageState
from worker.links import GitHubHost, Links
from worker.masking import Masker
from worker.settings import Settings

log = logging.getLogger(__name__)

PAGE_SIZE = 50
"""Runs on one list page (newest first); their metrics are fetched concurrently."""
CONCURRENCY = 8
QUERY_TIMEOUT_S = 5.0
LIST_DEADLINE_S = 3.0
"""How long a list waits for its runs' progress (metrics); late answers are left out."""
BASELINE_DEADLINE_S = 5.0
"""How long a run page waits for its baseline; without one in time it shows no changes."""
FINISHED_CACHE = 2048
FINISHED_TTL_S = 3600
BASELINE_CACHE = 512
BASELINE_TTL_S = 60

TEMPORAL_ERRORS: tuple[type[Exception], ...] = (RPCError, RuntimeError)
"""What a Temporal call raises when the server is unreachable (a lazy client's failed connect
is a RuntimeError) or refuses."""
UNANSWERED: tuple[type[Exception], ...] = (TimeoutError, *TEMPORAL_ERRORS)
_EPOCH = datetime.min.replace(tzinfo=UTC)


class Loader:
    """Reads what the pages show; every string read from Temporal passes the bot's masker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.links = Links(settings)
        self.github = GitHubHost.of(settings)
        self.masker = Masker.from_settings(settings)
        """The bot's own settings' secrets, masked out of every view: a second line of defence
        behind the worker's masking of the logs and progress it writes."""
        self._finished: TTLCache[str, RunProgress] = TTLCache(
            maxsize=FINISHED_CACHE, ttl=FINISHED_TTL_S
        )
        self._baselines: TTLCache[str, Baseline | None] = TTLCache(
            maxsize=BASELINE_CACHE, ttl=BASELINE_TTL_S
        )

    async def progress(
        self, state: BotState, run_id: str, timeout: float = QUERY_TIMEOUT_S
    ) -> RunProgress | None:
        """The run's progress (None: no such run); raises TimeoutError or a Temporal error."""
        if (cached := self._finished.get(run_id)) is not None:
            return cached
        progress = await asyncio.wait_for(state.control.progress(run_id), timeout)
        progress = self.masker.mask_data(progress)
        if progress is not None and progress.state.finished:
            self._finished[run_id] = progress
        return progress

    async def load(self, state: BotState, run_id: str) -> tuple[RunProgress | None, str]:
        """The run's progress, or a stand-in from visibility (with a notice) when none answers;
        raises a Temporal error when Temporal itself cannot be reached."""
        reason = QUERY_FAILED
        try:
            progress = await self.progress(state, run_id)
        except UNANSWERED as err:
            reason = QUERY_TIMED_OUT if isinstance(err, TimeoutError) else str(err)
            log.warning("progress query failed: %s", reason, extra={"run_id": run_id})
        else:
            if progress is not None:
                return progress, ""
        # Unknown, or known to visibility but silent: one describe call tells which.
        summary = await state.control.summary(run_id)
        if summary is None:
            return None, ""
        progress = self.masker.mask_data(progress_from_summary(summary))
        return progress, DETAILS_UNAVAILABLE.format(reason=reason)

    async def stage_live(self, state: BotState, run_id: str, stage: str) -> bool | None:
        """True while the stage runs, False once it cannot write more, None when nobody answers."""
        try:
            progress = await self.progress(state, run_id)
        except UNANSWERED:
            return None
        if progress is None or progress.state.finished:
            return False
        return any(s.name == stage and s.state is StageState.RUNNING for s in progress.stages)

    async def baseline(self, state: BotState, progress: RunProgress) -> Baseline | None:
        """The run's baseline (worker/baseline.py's rule, the one every surface shows), looked up
        once it has metrics to compare; None when there is none or it is not found in time."""
        if not progress.metrics:
            return None
        if progress.run_id in self._baselines:
            return self._baselines[progress.run_id]
        lookup = Baselines(state.client, self.settings.temporal_task_queue).of(progress)
        try:
            found = await asyncio.wait_for(lookup, BASELINE_DEADLINE_S)
        except UNANSWERED as err:
            # Not cached: the next poll of the page tries again.
            log.warning("baseline lookup failed: %r", err, extra={"run_id": progress.run_id})
            return None
        found = self.masker.mask_data(found)
        self._baselines[progress.run_id] = found
        return found

    async def view(self, state: BotState, progress: RunProgress, notice: str) -> RunView:
        """The run page's view: live stages' tails read from the log store, and the baseline."""
        running = [
            s.name
            for s in progress.stages
            if s.state is StageState.RUNNING and not progress.state.finished
        ]
        tails: dict[str, list[str]] = {}
        for name in running:
            tails[name] = await asyncio.to_thread(
                read_tail, state.logs, progress.run_id, name, self.masker
            )
        return build_view(
            progress,
            links=self.links,
            github=self.github,
            now=datetime.now(UTC),
            live_tails=tails,
            baseline=await self.baseline(state, progress),
            notice=notice,
        )

    async def rows(self, state: BotState, filters: dict[str, Any]) -> list[RunRow]:
        """The runs list, newest first: this deployment's runs (its task queue) matching
        `filters` (the keywords of `runs_query`); raises a Temporal error when Temporal cannot be
        reached."""
        found = await state.control.list_runs(limit=PAGE_SIZE, **filters)
        summaries = [self.masker.mask_data(summary) for summary in found]
        summaries.sort(key=lambda s: s.started_at or _EPOCH, reverse=True)
        answers = await self.answers(state, [s.run_id for s in summaries])
        now = datetime.now(UTC)
        return [build_row(s, answers.get(s.run_id), now) for s in summaries]

    async def answers(self, state: BotState, run_ids: list[str]) -> dict[str, RunProgress]:
        """Progress of many runs, queried concurrently; what has not answered by the deadline
        (a run whose worker is gone) is left out rather than holding up the page."""
        cached = {run_id: self._finished.get(run_id) for run_id in run_ids}
        found = {run_id: progress for run_id, progress in cached.items() if progress is not None}
        missing = [run_id for run_id, progress in cached.items() if progress is None]
        if not missing:
            return found
        limit = asyncio.Semaphore(CONCURRENCY)

        async def answer(run_id: str) -> tuple[str, RunProgress | None]:
            async with limit:
                try:
                    return run_id, await self.progress(state, run_id, LIST_DEADLINE_S)
                except UNANSWERED:
                    return run_id, None

        tasks = [asyncio.create_task(answer(run_id)) for run_id in missing]
        done, pending = await asyncio.wait(tasks, timeout=LIST_DEADLINE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            run_id, progress = task.result()
            if progress is not None:
                found[run_id] = progress
        return found
