"""Concurrency caps end to end on the fake GitHub: three pull requests' `/skyrun` at once against
`concurrency: 1`, their places in line on the PR comments, the check runs and the run API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.queueing import most_at_once, open_gate, spans, stamped_pipeline, wait_queued
from tests.worker.github.stack import Stack, github_stack, unique_repo
from worker.contract import RunRequest, RunState
from worker.settings import Settings


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    path = tmp_path / "stamps"
    path.mkdir()
    return path


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    path = tmp_path / "gates"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
async def stack(
    client: Client,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    stamps: Path,
    gates: Path,
) -> AsyncIterator[Stack]:
    mounts = f"{gates},{stamps}:rw"
    async with github_stack(client, make_settings, tmp_path, SKYRUN_LOCAL_MOUNTS=mounts) as running:
        yield running


async def requested_at(client: Client, run_id: str) -> int:
    """When the bot received the run's request (the order the queue keeps)."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (request,) = await client.data_converter.decode(started.input.payloads, [RunRequest])
    assert isinstance(request, RunRequest)
    return request.requested_at


async def api(stack: Stack, run_id: str) -> dict[str, Any]:
    response = await stack.http.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def until(check: Callable[[], bool], what: Callable[[], object]) -> None:
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what())


async def test_three_pull_requests_at_concurrency_1_queue_in_order_and_show_their_place(
    stack: Stack, client: Client, stamps: Path, gates: Path
) -> None:
    fake = stack.fake
    repo = unique_repo()
    fake.add_repo(repo, stamped_pipeline(stamps, gates, concurrency=1))
    pulls, shas = [], {}
    for n in range(3):
        sha = fake.commit(repo, {f"change-{n}.txt": str(n)}, branch=f"feature-{n}")
        pull = fake.open_pull(repo, f"feature-{n}", user="acme")
        pulls.append(pull)
        shas[pull.number] = sha
    comments = [fake.add_comment(repo, pull.number, "acme", "/skyrun") for pull in pulls]

    results = await asyncio.gather(*(stack.command(comment) for comment in comments))
    run_ids = [result.run_ids[0] for result in results]
    pr_of = dict(zip(run_ids, (pull.number for pull in pulls), strict=True))
    await until(lambda: len(list(stamps.iterdir())) == 1, lambda: list(stamps.iterdir()))
    (holder,) = [path.name for path in stamps.iterdir()]
    # The two others wait in the order the bot received their comments.
    arrived = {run_id: await requested_at(client, run_id) for run_id in run_ids}
    first, second = sorted((r for r in run_ids if r != holder), key=arrived.__getitem__)

    await wait_queued(stack.control, first, 1)
    await wait_queued(stack.control, second, 2, ahead=f"{repo}#{pr_of[first]}")
    data = await api(stack, second)
    assert data["state"] == "queued" and data["queue_position"] == 2
    assert data["queue_ahead"] == f"{repo}#{pr_of[first]}"
    assert (await api(stack, first))["queue_position"] == 1
    assert (await api(stack, holder))["queue_position"] is None
    place = f"2nd in line, behind {repo}#{pr_of[first]}"

    def comment_of(run_id: str) -> str:
        (comment,) = fake.bot_comments(repo, pr_of[run_id])
        return comment.body

    def check_title(run_id: str) -> str:
        (check,) = fake.check_runs_for(repo, shas[pr_of[run_id]])
        return str(check.data.get("output", {}).get("title", ""))

    await until(lambda: place in comment_of(second), lambda: comment_of(second))
    assert "`concurrency` in .skyrun.yaml" in comment_of(second)
    await until(lambda: check_title(second) == f"Queued: {place}", lambda: check_title(second))
    await until(lambda: "next in line" in comment_of(first), lambda: comment_of(first))

    open_gate(gates, holder)  # the holder ends: the first in line computes, the second moves up
    await until(lambda: (stamps / first).exists(), lambda: list(stamps.iterdir()))
    await wait_queued(stack.control, second, 1)
    assert (await api(stack, second))["queue_position"] == 1
    await until(lambda: "next in line" in comment_of(second), lambda: comment_of(second))
    assert check_title(second) == "Queued: next in line" or "Running" in check_title(second)

    open_gate(gates, "all")
    runs = [await stack.finished(run_id) for run_id in run_ids]
    assert [run.state for run in runs] == [RunState.SUCCEEDED] * 3, [run.error for run in runs]
    assert [span.run_id for span in spans(stamps)] == [holder, first, second]
    assert most_at_once(stamps) == 1
    for run_id in run_ids:
        assert (await api(stack, run_id))["queue_position"] is None
        assert "in line" not in comment_of(run_id)
    (history,) = [c.history for c in fake.bot_comments(repo, pr_of[second])]
    assert any(place in body for body in history)
    assert any("next in line" in body for body in history)
