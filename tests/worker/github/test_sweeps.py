"""Sweeps from a pull request comment, end to end: `/skyrun sweep` to the bot, the sweep and its
runs on a real worker (local backend, real Temporal), one comment with the results table on the
fake GitHub, edited in place; the cap, permissions, redelivery and cancel."""

from __future__ import annotations

import asyncio
import contextlib

from temporalio.client import WorkflowFailureError

from tests.runs import clusters_left, wait_stage_running
from tests.worker.github.stack import PIPELINE, Stack, unique_repo
from worker.contract import RunState, SweepMember
from worker.github import texts
from worker.sweepspec import QUERY_SWEEP, SweepStatus, child_id
from worker.sweeptable import BEST_MARK, HEADER_CANCELLED, TAG

LOSS_TASK = 'run: |\n  echo training\n  echo "::metric loss=0.$A$B"\n  echo "::metric steps=$B"\n'
SLOW_TASK = "run: |\n  echo started\n  sleep 300\n"


def pipeline(train: str, gates: str = "") -> dict[str, str]:
    return {**PIPELINE, ".skyrun.yaml": PIPELINE[".skyrun.yaml"] + gates, "train.yaml": train}


async def sweep_status(stack: Stack, sweep_id: str, timeout: float = 120) -> SweepStatus:
    """Wait until the sweep is over (its last report included) and return its status."""
    handle = stack.client.get_workflow_handle(sweep_id)
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout)
    status: SweepStatus = await handle.query(QUERY_SWEEP, result_type=SweepStatus)
    return status


async def test_a_2x2_sweep_runs_four_runs_and_keeps_one_table_up_to_date(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, pipeline('run: echo "::metric loss=0.2"\n'))
    base_run = await stack.push(repo, "main", fake.head(repo))
    assert (await stack.finished(base_run)).state is RunState.SUCCEEDED
    sha = fake.commit(repo, pipeline(LOSS_TASK, "gates:\n  - loss <= 0.5\n"), branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")
    comment = fake.add_comment(repo, pull.number, "acme", "/skyrun sweep train A=1,2 B=3,4")

    result = await stack.command(comment)
    assert result.outcome == "started" and result.commit == sha
    (sweep_id,) = result.run_ids
    status = await sweep_status(stack, sweep_id)

    assert status.state is RunState.SUCCEEDED
    assert status.run_ids == [child_id(sweep_id, i) for i in range(4)]
    runs = await stack.control.list_runs(repo=repo)
    assert sorted(r.run_id for r in runs if r.run_id != base_run) == sorted(status.run_ids)
    combos = [
        {"A": "1", "B": "3"},
        {"A": "1", "B": "4"},
        {"A": "2", "B": "3"},
        {"A": "2", "B": "4"},
    ]
    for index, run_id in enumerate(status.run_ids):
        progress = await stack.control.progress(run_id)
        assert progress is not None and progress.state is RunState.SUCCEEDED, progress
        assert progress.commit == sha
        assert progress.sweep == SweepMember(sweep_id, index, combos[index])
        assert [s.name for s in progress.stages] == ["train"]
        assert progress.metrics["loss"] == float(f"0.{combos[index]['A']}{combos[index]['B']}")
    # One comment for the whole sweep, created at its start and edited in place.
    assert len(fake.calls("POST", rf"/issues/{pull.number}/comments$")) == 1
    (table,) = fake.bot_comments(repo, pull.number)
    assert table.body.startswith(TAG.format(sweep_id=sweep_id) + "\n")
    assert "0 of 4 runs finished" in table.history[0]
    assert len(table.history) >= 2
    assert "all 4 runs finished" in table.body
    rows = [line for line in table.body.splitlines() if "/runs/" in line and line.startswith("|")]
    assert len(rows) == 4
    (best,) = [row for row in rows if row.startswith(f"| {BEST_MARK} |")]
    assert "| `1` | `3` |" in best and status.run_ids[0] in best  # loss 0.13, lower is better
    assert "| 0.13 (-0.07 (-35.0%)) |" in best  # against main's last good run
    assert all("✅ succeeded" in row and "✅ 1 of 1" in row for row in rows)
    assert "best by `loss` (lower is better; the first gate, `loss <= 0.5`)" in table.body
    assert f"[`main`](http://skyrun.test/runs/{base_run})" in table.body
    assert fake.reactions(comment) == ["eyes", "rocket"]
    # The runs report nothing of their own: no comment each, no check run each.
    assert fake.check_runs_for(repo, sha) == []
    assert all("skyrun:run" not in c.body for c in fake.bot_comments(repo, pull.number))
    api = (await stack.http.get(f"/api/runs/{status.run_ids[3]}")).json()
    assert api["sweep"] == {"id": sweep_id, "index": 3, "values": {"A": "2", "B": "4"}}
    page = (await stack.http.get(f"/runs/{status.run_ids[3]}")).text
    assert f"part of sweep <code>{sweep_id}</code> (A=2, B=4)" in page
    assert clusters_left(stack.settings) == []


async def test_a_sweep_over_the_cap_is_refused_with_its_count(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, pipeline(LOSS_TASK))
    pull = fake.open_pull(repo, "main", user="acme")

    result = await stack.command(
        fake.add_comment(repo, pull.number, "acme", "/skyrun sweep A=1,2,3 B=1,2,3 C=1,2")
    )

    assert result.outcome == "refused"
    (reply,) = fake.bot_comments(repo, pull.number)
    assert "this sweep would start 18 runs; SKYRUN_MAX_SWEEP is 16" in reply.body
    assert await stack.control.list_runs(repo=repo) == []


async def test_a_sweep_by_someone_without_write_access_is_refused(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, pipeline(LOSS_TASK))
    pull = fake.open_pull(repo, "main", user="acme")
    fake.grant(repo, "bob", "triage")

    result = await stack.command(fake.add_comment(repo, pull.number, "bob", "/skyrun sweep A=1,2"))

    assert result.outcome == "denied"
    (reply,) = fake.bot_comments(repo, pull.number)
    reason = texts.NEEDS_WRITE.format(user="bob", repo=repo, what=texts.WHAT_RUN, permission="read")
    assert texts.REPLY_DENIED.format(reason=reason) in reply.body
    assert await stack.control.list_runs(repo=repo) == []


async def test_a_redelivered_sweep_comment_starts_no_second_sweep(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, pipeline(LOSS_TASK))
    pull = fake.open_pull(repo, "main", user="acme")
    comment = fake.add_comment(repo, pull.number, "acme", "/skyrun sweep A=1,2")

    first = await stack.command(comment, delivery="sweep-delivery-1")
    again = await stack.deliver(
        "issue_comment", fake.comment_payload(comment), delivery="sweep-delivery-1"
    )
    status = await sweep_status(stack, first.run_ids[0])

    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert len(await stack.control.list_runs(repo=repo)) == 2 == len(status.run_ids)
    assert len(fake.bot_comments(repo, pull.number)) == 1


async def test_cancel_on_the_pull_request_cancels_its_sweep_and_every_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, pipeline(SLOW_TASK))
    pull = fake.open_pull(repo, "main", user="acme")
    started = await stack.command(
        fake.add_comment(repo, pull.number, "acme", "/skyrun sweep train A=1,2")
    )
    (sweep_id,) = started.run_ids
    for index in range(2):
        await wait_stage_running(stack.control, child_id(sweep_id, index), "train")

    cancelled = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun cancel"))
    status = await sweep_status(stack, sweep_id)

    assert sweep_id in cancelled.run_ids
    assert status.state is RunState.CANCELLED
    for run_id in status.run_ids:
        progress = await stack.control.progress(run_id)
        assert progress is not None and progress.state is RunState.CANCELLED
    assert await stack.control.list_runs(repo=repo, running_only=True) == []
    assert clusters_left(stack.settings) == []
    table = next(c for c in fake.bot_comments(repo, pull.number) if "skyrun:sweep" in c.body)
    assert HEADER_CANCELLED.format(sweep_id=sweep_id) in table.body
    assert table.body.count("🚫 was cancelled") == 2
