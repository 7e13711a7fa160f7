"""Loading progress, runs and baselines from Temporal: deadlines, caches, stand-ins, masking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from temporalio.client import Client

from bot.pages.loading import Loader
from bot.pages.texts import DETAILS_UNAVAILABLE, QUERY_TIMED_OUT
from bot.state import BotState
from tests.bot.pages.helpers import bot_only
from tests.runs import request_for
from worker.baseline import Baseline
from worker.contract import RunProgress, RunState, StageProgress, StageState, Trigger
from worker.logstore import LogStore
from worker.settings import Settings

SECRET = "loader-secret-do-not-show"


def progress(run_id: str, state: RunState = RunState.SUCCEEDED, **metrics: float) -> RunProgress:
    return RunProgress(
        run_id=run_id,
        repo="acme/x",
        ref="main",
        commit="c" * 40,
        trigger=Trigger.PUSH,
        requested_by=f"by {SECRET}",
        state=state,
        stages=[StageProgress("s", "s", StageState.SUCCEEDED, metrics=dict(metrics))],
    )


class FakeControl:
    """The run-control client, answering from a dict; `slow` run ids never answer."""

    def __init__(self, runs: dict[str, RunProgress], slow: frozenset[str] = frozenset()) -> None:
        self.runs, self.slow = runs, slow
        self.asked: list[str] = []

    async def progress(self, run_id: str) -> RunProgress | None:
        self.asked.append(run_id)
        if run_id in self.slow:
            await asyncio.sleep(3600)
        return self.runs.get(run_id)


class FakeBaselines:
    """Stands in for worker.baseline.Baselines; counts lookups, answers from a queue."""

    answers: list[Any] = []
    calls: list[tuple[str, str]] = []

    def __init__(self, client: object, task_queue: str) -> None:
        self.task_queue = task_queue

    async def of(self, run: RunProgress) -> Baseline | None:
        FakeBaselines.calls.append((run.run_id, self.task_queue))
        answer = FakeBaselines.answers.pop(0)
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, Exception):
            raise answer
        assert answer is None or isinstance(answer, Baseline)
        return answer


@pytest.fixture
def loader(make_settings: Callable[..., Settings]) -> Loader:
    return Loader(make_settings(GITHUB_WEBHOOK_SECRET=SECRET))


def state_for(settings: Settings, control: object, tmp_path: Path) -> BotState:
    return BotState(settings=settings, client=None, control=control, logs=LogStore(tmp_path))  # type: ignore[arg-type]


async def test_a_finished_runs_progress_is_asked_once_and_a_live_ones_every_time(
    loader: Loader, tmp_path: Path
) -> None:
    control = FakeControl({"done": progress("done"), "live": progress("live", RunState.RUNNING)})
    state = state_for(loader.settings, control, tmp_path)
    for _ in range(3):
        done = await loader.progress(state, "done")
        await loader.progress(state, "live")
        assert await loader.progress(state, "unknown") is None
    assert control.asked.count("done") == 1 and control.asked.count("live") == 3
    assert control.asked.count("unknown") == 3  # a run not there yet may appear
    assert done is not None and done.requested_by == "by ***"


async def test_a_list_waits_for_answers_until_its_deadline_only(
    loader: Loader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.pages.loading.LIST_DEADLINE_S", 0.3)
    runs = {f"r{i}": progress(f"r{i}", accuracy=i) for i in range(20)}
    control = FakeControl(runs, slow=frozenset({"r3", "r7"}))
    state = state_for(loader.settings, control, tmp_path)
    started = time.monotonic()
    found = await loader.answers(state, [*runs, "gone"])
    assert time.monotonic() - started < 2
    assert sorted(found) == sorted(set(runs) - {"r3", "r7"})
    # Finished answers are cached; the silent ones are asked again next time.
    control.asked.clear()
    await loader.answers(state, list(runs))
    assert sorted(control.asked) == ["r3", "r7"]


async def test_baselines_are_looked_up_with_a_deadline_cached_and_masked(
    loader: Loader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.pages.loading.Baselines", FakeBaselines)
    monkeypatch.setattr("bot.pages.loading.BASELINE_DEADLINE_S", 0.2)
    FakeBaselines.calls = []
    found = Baseline("base", "b" * 40, f"main-{SECRET}", {"accuracy": 0.5})
    FakeBaselines.answers = ["hang", RuntimeError("Temporal went away"), found]
    state = state_for(loader.settings, FakeControl({}), tmp_path)
    run = progress("r", accuracy=0.7)

    # No metrics, nothing to compare: no lookup at all.
    assert await loader.baseline(state, progress("no-metrics")) is None
    started = time.monotonic()
    assert await loader.baseline(state, run) is None  # too slow: the page does not wait
    assert time.monotonic() - started < 2
    assert await loader.baseline(state, run) is None  # failed: not cached either
    first = await loader.baseline(state, run)
    assert first is not None and first.ref == "main-***" and first.metrics == {"accuracy": 0.5}
    assert await loader.baseline(state, run) == first  # cached: no fourth lookup
    assert FakeBaselines.calls == [("r", loader.settings.temporal_task_queue)] * 3

    # "No baseline" is an answer too, and is cached like one.
    FakeBaselines.answers = [None]
    other = progress("r2", accuracy=1)
    assert await loader.baseline(state, other) is None
    assert await loader.baseline(state, other) is None
    assert len(FakeBaselines.calls) == 4


async def test_a_run_no_worker_answers_for_shows_what_temporal_lists_masked(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    settings = make_settings(GITHUB_WEBHOOK_SECRET=SECRET)
    async with bot_only(client, settings) as stack:  # and no worker at all
        request = request_for(git_repo({"a.yaml": "run: echo\n"}), requested_by=f"u {SECRET}")
        outcome = await stack.control.start(request)
        try:
            page = await stack.http.get(f"/runs/{outcome.run_id}")
            assert page.status_code == 200 and 'data-state="queued"' in page.text
            assert str(escape(DETAILS_UNAVAILABLE.format(reason=QUERY_TIMED_OUT))) in page.text
            listed = (await stack.http.get("/api/runs")).json()["runs"]
            assert [(r["run_id"], r["metrics"]) for r in listed] == [(outcome.run_id, None)]
            assert listed[0]["requested_by"] == "u ***" and "u ***" in page.text
            assert SECRET not in page.text + str(listed)
        finally:
            await client.get_workflow_handle(outcome.run_id).terminate()
