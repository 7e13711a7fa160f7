"""GitHub's merge queue end to end: signed `merge_group` deliveries to the bot, runs on a real
worker, the `skyrun` check run on the group's head (the required check of the queue)."""

from __future__ import annotations

from tests.runs import wait_stage_running
from tests.worker.github.stack import PIPELINE, SLOW_TRAIN, Stack, unique_repo
from worker.activities import MERGE_GROUP_OFF
from worker.contract import RunState, Trigger, lane_for_merge_group
from worker.pipeline import PIPELINE_FILE

QUEUED = {
    **PIPELINE,
    ".skyrun.yaml": PIPELINE[".skyrun.yaml"].replace(
        "{push: [main]}", "{push: [main], merge_group: true}"
    ),
}


def queue(stack: Stack, repo: str, files: dict[str, str | None]) -> tuple[str, str]:
    """A pull request of `files` queued for merge: the group's branch and head commit."""
    fake = stack.fake
    fake.commit(repo, files, branch="feature")
    pull = fake.open_pull(repo, "feature", user="alice")
    branch = fake.merge_group(repo, pull, files)
    return branch, fake.head(repo, branch)


async def test_checks_requested_reports_the_check_run_on_the_group_head(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**QUEUED, "train.yaml": "run: echo '::metric accuracy=0.5'\n"})
    base_run = await stack.push(repo, "main", fake.head(repo))
    assert (await stack.finished(base_run)).state is RunState.SUCCEEDED
    branch, head = queue(stack, repo, {"train.yaml": "run: echo '::metric accuracy=0.75'\n"})
    posts_before = len(fake.calls("POST", r"/issues/\d+/comments$"))

    response = await stack.deliver(
        "merge_group", fake.merge_group_payload(repo, branch, sender="alice")
    )
    dispatched = await stack.dispatched(response)
    progress = await stack.finished(dispatched.run_id)

    assert dispatched.started
    assert progress.state is RunState.SUCCEEDED, progress.error
    assert (progress.commit, progress.ref) == (head, branch)
    assert progress.trigger is Trigger.MERGE_GROUP and progress.base_ref == "main"
    (check,) = fake.check_runs_for(repo, head)
    assert check.data["name"] == "skyrun" and check.data["conclusion"] == "success"
    assert check.data["external_id"] == dispatched.run_id
    # Compared with the base branch's latest success, not with the group's own branch.
    assert "+0.25 (+50.0%)" in check.data["output"]["summary"]
    assert len(fake.calls("POST", r"/issues/\d+/comments$")) == posts_before  # no PR comment
    (summary,) = await stack.control.list_runs(lane=lane_for_merge_group(repo, branch))
    assert summary.trigger == "merge_group"


async def test_destroyed_cancels_the_groups_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, QUEUED)
    branch, head = queue(stack, repo, {"train.yaml": SLOW_TRAIN})
    started = await stack.dispatched(
        await stack.deliver("merge_group", fake.merge_group_payload(repo, branch, sender="alice"))
    )
    await wait_stage_running(stack.control, started.run_id, "train")

    destroyed = await stack.dispatched(
        await stack.deliver(
            "merge_group",
            fake.merge_group_payload(
                repo, branch, "destroyed", sender="alice", reason="invalidated"
            ),
        )
    )
    progress = await stack.finished(started.run_id)

    assert destroyed.cancelled == [started.run_id]
    assert progress.state is RunState.CANCELLED
    (check,) = fake.check_runs_for(repo, head)
    assert check.data["conclusion"] == "cancelled"


async def test_a_pipeline_without_on_merge_group_skips_quietly(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    branch, _ = queue(stack, repo, {"x.txt": "1"})
    writes_before = len(fake.calls("POST")) + len(fake.calls("PATCH"))

    dispatched = await stack.dispatched(
        await stack.deliver("merge_group", fake.merge_group_payload(repo, branch, sender="alice"))
    )
    progress = await stack.finished(dispatched.run_id)

    assert progress.state is RunState.SKIPPED
    assert progress.error == MERGE_GROUP_OFF.format(file=PIPELINE_FILE)
    assert progress.stages == []
    assert fake.check_runs == {}
    assert len(fake.calls("POST")) + len(fake.calls("PATCH")) == writes_before


async def test_a_merge_group_does_not_supersede_the_base_branchs_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**QUEUED, "train.yaml": SLOW_TRAIN})
    main_run = await stack.push(repo, "main", fake.head(repo))
    await wait_stage_running(stack.control, main_run, "train")
    branch, _ = queue(stack, repo, {"train.yaml": "run: echo fast\n"})

    group = await stack.dispatched(
        await stack.deliver("merge_group", fake.merge_group_payload(repo, branch, sender="alice"))
    )
    progress = await stack.finished(group.run_id)

    assert group.superseded == []
    assert progress.state is RunState.SUCCEEDED, progress.error
    main = await stack.control.progress(main_run)
    assert main is not None and main.state is RunState.RUNNING
    await stack.control.cancel(main_run)
    await stack.finished(main_run)
