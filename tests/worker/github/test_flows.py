"""End to end: signed deliveries to the bot, runs on a real worker (local backend, real Temporal),
results on the fake GitHub through the real PyGithub, checkouts cloned from it over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from bot.github.events import R_FORK
from tests.fakes.github import APP_BOT_LOGIN
from tests.runs import clusters_left, wait_stage_running
from tests.worker.github.stack import PIPELINE, SLOW_TRAIN, Stack, github_stack, unique_repo
from worker.commands import COMMENT_USAGE
from worker.contract import RunState, StageState
from worker.github import texts
from worker.github.render import short
from worker.settings import Settings

WATCH_ALL = {**PIPELINE, ".skyrun.yaml": PIPELINE[".skyrun.yaml"].replace("[main]", "['*']")}
PR_RUNS = {
    **PIPELINE,
    ".skyrun.yaml": PIPELINE[".skyrun.yaml"].replace("{push: [main]}", "{pull_request: true}"),
}


def body_of(stack: Stack, repo: str, number: int) -> str:
    (comment,) = stack.fake.bot_comments(repo, number)
    return comment.body


async def test_push_to_a_watched_branch_runs_and_completes_its_check_run(stack: Stack) -> None:
    repo = unique_repo()
    stack.fake.add_repo(repo, PIPELINE)
    sha = stack.fake.head(repo)

    run_id = await stack.push(repo, "main", sha)
    progress = await stack.finished(run_id)

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.commit == sha
    (check,) = stack.fake.check_runs_for(repo, sha)
    assert check.data["name"] == "skyrun"
    assert check.data["status"] == "completed" and check.data["conclusion"] == "success"
    assert check.data["details_url"] == f"http://skyrun.test/runs/{run_id}"
    assert check.data["external_id"] == run_id
    assert check.history[0]["status"] == "in_progress"
    assert "`accuracy` | 0.75" in check.data["output"]["summary"]
    assert not stack.fake.calls("POST", r"/issues/\d+/comments$")  # no pull request: no comment


async def test_push_to_an_unwatched_branch_posts_nothing(stack: Stack) -> None:
    repo = unique_repo()
    stack.fake.add_repo(repo, PIPELINE)
    sha = stack.fake.commit(repo, {"x.txt": "1"}, branch="experiment")

    progress = await stack.finished(await stack.push(repo, "experiment", sha))

    assert progress.state is RunState.SKIPPED
    assert progress.stages == []
    assert stack.fake.check_runs == {}
    assert not stack.fake.calls("POST") and not stack.fake.calls("PATCH")


async def test_push_to_a_pull_request_branch_also_comments_on_the_pull_request(
    stack: Stack,
) -> None:
    repo = unique_repo()
    stack.fake.add_repo(repo, WATCH_ALL)
    sha = stack.fake.commit(repo, {"x.txt": "1"}, branch="feature")
    pull = stack.fake.open_pull(repo, "feature", user="alice")

    progress = await stack.finished(await stack.push(repo, "feature", sha))

    assert progress.state is RunState.SUCCEEDED
    body = body_of(stack, repo, pull.number)
    assert "✅ skyrun run" in body and f"Commit `{short(sha)}` of `feature`" in body
    assert stack.fake.check_runs_for(repo, sha)[0].data["conclusion"] == "success"


async def test_comment_run_acknowledges_and_edits_one_comment_in_place(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    sha = fake.commit(repo, {"x.txt": "1"}, branch="feature")
    pull = fake.open_pull(repo, "feature", user="alice")
    fake.grant(repo, "alice", "write")
    comment = fake.add_comment(repo, pull.number, "alice", "/skyrun EPOCHS=2\nthanks!")

    result = await stack.command(comment)
    assert result.outcome == "started" and result.commit == sha
    progress = await stack.finished(result.run_ids[0])

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert fake.reactions(comment) == ["eyes", "rocket"]
    (sticky,) = fake.bot_comments(repo, pull.number)
    assert len(fake.calls("POST", rf"/issues/{pull.number}/comments$")) == 1
    assert len(sticky.history) >= 4  # queued, stages running and done, succeeded: one comment
    assert "⏳ skyrun run" in sticky.history[0]
    assert any("| `train` | 🏃 running |" in body for body in sticky.history)
    assert "✅ skyrun run" in sticky.body and "| `train` | ✅ succeeded |" in sticky.body
    assert f"Commit `{short(sha)}` of `feature`" in sticky.body
    assert f"/runs/{progress.run_id}/logs/train" in sticky.body
    (check,) = fake.check_runs_for(repo, sha)
    assert [h.get("status") for h in check.history][:2] == ["queued", "in_progress"]
    assert check.data["conclusion"] == "success"
    assert all(fake.token not in text for text in [*sticky.history, str(check.history)])


async def test_metrics_are_compared_with_the_latest_success_on_the_base_branch(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": "run: echo '::metric accuracy=0.5'\n"})
    base_run = await stack.push(repo, "main", fake.head(repo))
    assert (await stack.finished(base_run)).metrics == {"accuracy": 0.5}
    fake.commit(repo, {"train.yaml": "run: echo '::metric accuracy=0.75'\n"}, branch="better")
    pull = fake.open_pull(repo, "better", user="acme")

    result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    await stack.finished(result.run_ids[0])

    body = body_of(stack, repo, pull.number)
    assert f"[`main`](http://skyrun.test/runs/{base_run})" in body
    assert "| `accuracy` | 0.75 | 0.5 | +0.25 (+50.0%) |" in body
    (check,) = fake.check_runs_for(repo, result.commit)
    assert "+0.25 (+50.0%)" in check.data["output"]["summary"]


async def test_failing_stage_says_which_its_last_lines_and_how_to_retry(
    stack: Stack, settings: Settings
) -> None:
    repo = unique_repo()
    fake = stack.fake
    failing = "run: |\n  echo loading data\n  echo 'ValueError: bad shape' >&2\n  exit 3\n"
    fake.add_repo(repo, {**PIPELINE, "train.yaml": failing})
    pull = fake.open_pull(repo, "main", user="acme")

    result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    progress = await stack.finished(result.run_ids[0])

    assert progress.state is RunState.FAILED
    body = body_of(stack, repo, pull.number)
    assert "❌ skyrun run" in body
    assert texts.FAILED_STAGE_HEADING.format(stage="train") in body
    assert "stage 'train' failed with exit status 3" in body
    assert "ValueError: bad shape" in body
    assert texts.NEXT_COMMENT_FAILED.format(stage="train") in body
    (check,) = fake.check_runs_for(repo, result.commit)
    assert check.data["conclusion"] == "failure"
    assert check.data["output"]["title"] == "Stage train failed"
    assert "ValueError: bad shape" in check.data["output"]["text"]
    assert clusters_left(stack.settings) == []


async def test_a_user_without_write_access_is_told_and_nothing_runs(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    pull = fake.open_pull(repo, "main", user="acme")
    fake.grant(repo, "bob", "triage")

    result = await stack.command(fake.add_comment(repo, pull.number, "bob", "/skyrun"))

    assert result.outcome == "denied"
    (reply,) = fake.bot_comments(repo, pull.number)
    reason = texts.NEEDS_WRITE.format(user="bob", repo=repo, what=texts.WHAT_RUN, permission="read")
    assert texts.REPLY_DENIED.format(reason=reason) in reply.body
    assert await stack.control.list_runs(repo=repo) == []
    assert fake.check_runs == {}


async def test_fork_pull_requests_run_only_through_a_maintainer(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PR_RUNS)
    fork = fake.fork(repo, "mallory")
    sha = fake.commit(fork.full_name, {"x.txt": "1"}, branch="patch")
    pull = fake.open_pull(repo, "patch", user="mallory", head_repo=fork.full_name)

    opened = await stack.deliver("pull_request", fake.pull_request_payload(pull, "opened"))
    assert opened.json() == {"outcome": "ignored", "reason": R_FORK}

    by_author = await stack.command(fake.add_comment(repo, pull.number, "mallory", "/skyrun"))
    assert by_author.outcome == "denied"

    result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    assert result.outcome == "started" and result.commit == sha
    progress = await stack.finished(result.run_ids[0])
    assert progress.state is RunState.SUCCEEDED and progress.commit == sha
    sticky = next(c for c in fake.bot_comments(repo, pull.number) if "skyrun:run" in c.body)
    assert f"Commit `{short(sha)}`" in sticky.body
    assert texts.FORK_COMMIT.format(head_repo=fork.full_name, user="acme") in sticky.body
    assert len(await stack.control.list_runs(repo=repo)) == 1


async def test_a_fork_pushed_to_after_the_comment_is_not_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    fork = fake.fork(repo, "mallory")
    fake.commit(fork.full_name, {"x.txt": "reviewed"}, branch="patch")
    pull = fake.open_pull(repo, "patch", user="mallory", head_repo=fork.full_name)
    comment = fake.add_comment(repo, pull.number, "acme", "/skyrun")
    moved = fake.commit(fork.full_name, {"x.txt": "not reviewed"}, branch="patch")

    result = await stack.command(comment)

    assert result.outcome == "denied"
    reason = texts.HEAD_UNCERTAIN.format(head_repo=fork.full_name, commit=moved[:7])
    assert texts.REPLY_DENIED.format(reason=reason) in fake.bot_comments(repo, pull.number)[0].body
    assert await stack.control.list_runs(repo=repo) == []


async def test_help_status_and_usage_errors_are_answered(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    pull = fake.open_pull(repo, "main", user="acme")

    for text in ("/skyrun help", "/skyrun status", "/skyrun train -x"):
        await stack.command(fake.add_comment(repo, pull.number, "carol", text))

    helped, status, usage = (c.body for c in fake.bot_comments(repo, pull.number))
    assert texts.REPLY_HELP.format(usage=COMMENT_USAGE) in helped
    assert texts.REPLY_STATUS_EMPTY in status
    assert "I could not read that command: '-x' is neither a stage name nor KEY=VALUE" in usage
    assert "`/skyrun status`" in usage
    asked = [c for c in fake.comments_on(repo, pull.number) if c.user == "carol"]
    assert [fake.reactions(c) for c in asked] == [["eyes"]] * 3


async def test_cancel_and_status_on_a_running_comment_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    pull = fake.open_pull(repo, "main", user="acme")
    fake.grant(repo, "mallory", "read")
    started = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    run_id = started.run_ids[0]
    await wait_stage_running(stack.control, run_id, "train")

    denied = await stack.command(fake.add_comment(repo, pull.number, "mallory", "/skyrun cancel"))
    assert denied.outcome == "denied"
    status = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun status"))
    assert status.outcome == "status"
    cancelled = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun cancel"))
    assert cancelled.run_ids == [run_id]
    progress = await stack.finished(run_id)
    again = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun cancel"))

    assert progress.state is RunState.CANCELLED
    assert [s.state for s in progress.stages] == [StageState.SUCCEEDED, StageState.CANCELLED]
    assert clusters_left(stack.settings) == []
    assert again.run_ids == []
    replies = [c.body for c in fake.bot_comments(repo, pull.number) if "skyrun:reply" in c.body]
    assert "needs write access" in replies[0] and texts.WHAT_CANCEL in replies[0]
    assert f"[`{run_id}`](http://skyrun.test/runs/{run_id}) | 🏃 running" in replies[1]
    assert texts.REPLY_CANCELLED.split("{", 1)[0] in replies[2] and run_id in replies[2]
    assert texts.REPLY_NOTHING_TO_CANCEL in replies[3]
    sticky = next(c for c in fake.bot_comments(repo, pull.number) if "skyrun:run" in c.body)
    assert (
        "🚫 skyrun run" in sticky.body and "every cluster it launched was torn down" in sticky.body
    )
    assert fake.check_runs_for(repo, progress.commit)[0].data["conclusion"] == "cancelled"


async def test_repeated_comment_and_redelivery_start_nothing_new(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    pull = fake.open_pull(repo, "main", user="acme")
    first = fake.add_comment(repo, pull.number, "acme", "/skyrun")
    started = await stack.command(first, delivery="delivery-1")
    run_id = started.run_ids[0]
    await wait_stage_running(stack.control, run_id, "train")

    again = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    redelivered = await stack.deliver(
        "issue_comment", fake.comment_payload(first), delivery="delivery-1"
    )

    assert again.outcome == "already_running" and again.run_ids == [run_id]
    assert redelivered.status_code == 200 and redelivered.json()["outcome"] == "duplicate"
    runs = await stack.control.list_runs(repo=repo)
    assert [r.run_id for r in runs] == [run_id]
    reply = fake.bot_comments(repo, pull.number)[-1].body
    assert texts.REPLY_ALREADY_RUNNING.split("`", 1)[0] in reply and run_id in reply
    await stack.control.cancel(run_id)
    assert (await stack.finished(run_id)).state is RunState.CANCELLED


async def test_a_second_push_supersedes_the_first(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    first_sha = fake.head(repo)
    first = await stack.push(repo, "main", first_sha)
    await wait_stage_running(stack.control, first, "train")

    second_sha = fake.commit(repo, {"train.yaml": PIPELINE["train.yaml"]})
    response = await stack.deliver(
        "push", fake.push_payload(repo, "refs/heads/main", second_sha, sender="alice")
    )
    dispatched = await stack.dispatched(response)
    assert dispatched.started and dispatched.superseded == [first]
    second = dispatched.run_id

    assert (await stack.finished(first)).state is RunState.CANCELLED
    assert (await stack.finished(second)).state is RunState.SUCCEEDED
    assert fake.check_runs_for(repo, first_sha)[0].data["conclusion"] == "cancelled"
    assert fake.check_runs_for(repo, second_sha)[0].data["conclusion"] == "success"
    assert clusters_left(stack.settings) == []


async def test_closing_the_pull_request_cancels_its_runs(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    pull = fake.open_pull(repo, "main", user="acme")
    started = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
    await wait_stage_running(stack.control, started.run_ids[0], "train")

    fake.close_pull(pull)
    closed = await stack.deliver("pull_request", fake.pull_request_payload(pull, "closed"))

    assert (await stack.dispatched(closed)).cancelled == started.run_ids
    assert (await stack.finished(started.run_ids[0])).state is RunState.CANCELLED
    assert clusters_left(stack.settings) == []


async def test_pull_request_events_run_trusted_authors_when_the_pipeline_asks(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PR_RUNS)
    sha = fake.commit(repo, {"x.txt": "1"}, branch="feature")
    fake.grant(repo, "alice", "maintain")
    trusted = fake.open_pull(repo, "feature", user="alice")
    fake.commit(repo, {"y.txt": "1"}, branch="other")
    fake.grant(repo, "bob", "read")
    untrusted = fake.open_pull(repo, "other", user="bob")

    ran = await stack.deliver("pull_request", fake.pull_request_payload(trusted, "opened"))
    refused = await stack.deliver("pull_request", fake.pull_request_payload(untrusted, "opened"))

    progress = await stack.finished((await stack.dispatched(ran)).run_id)
    assert progress.state is RunState.SUCCEEDED and progress.commit == sha
    assert "✅ skyrun run" in body_of(stack, repo, trusted.number)
    denied = await stack.finished((await stack.dispatched(refused)).run_id)
    assert denied.state is RunState.DENIED and "needs write access" in denied.error
    assert fake.bot_comments(repo, untrusted.number) == []  # quiet: no noise on every PR


async def test_pull_request_events_do_nothing_unless_the_pipeline_asks(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    fake.commit(repo, {"x.txt": "1"}, branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")

    response = await stack.deliver("pull_request", fake.pull_request_payload(pull, "opened"))

    progress = await stack.finished((await stack.dispatched(response)).run_id)
    assert progress.state is RunState.SKIPPED
    assert fake.bot_comments(repo, pull.number) == [] and fake.check_runs == {}


async def test_a_github_outage_during_reporting_never_fails_the_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, WATCH_ALL)
    sha = fake.commit(repo, {"x.txt": "1"}, branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")
    fake.outage = True

    run_id = await stack.push(repo, "feature", sha)

    async def finished_compute() -> None:
        while True:
            progress = await stack.control.progress(run_id)
            if progress is not None and progress.state.finished:
                return
            await asyncio.sleep(0.2)

    await asyncio.wait_for(finished_compute(), 60)
    assert clusters_left(stack.settings) == []
    assert fake.calls("GET", "/pulls$")  # it tried, and GitHub answered 503
    assert fake.check_runs == {} and fake.bot_comments(repo, pull.number) == []
    fake.outage = False
    progress = await stack.finished(run_id)

    assert progress.state is RunState.SUCCEEDED
    assert "✅ skyrun run" in body_of(stack, repo, pull.number)
    assert fake.check_runs_for(repo, sha)[0].data["conclusion"] == "success"


async def test_a_github_app_clones_private_repositories_with_installation_tokens(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(client, make_settings, tmp_path, app_id="4242") as stack:
        repo = unique_repo()
        stack.fake.add_repo(repo, PIPELINE, private=True)
        stack.fake.install(77, repo)
        sha = stack.fake.head(repo)

        progress = await stack.finished(await stack.push(repo, "main", sha))

        assert progress.state is RunState.SUCCEEDED, progress.error
        (check,) = stack.fake.check_runs_for(repo, sha)
        assert check.data["conclusion"] == "success" and check.creator == APP_BOT_LOGIN
        assert len(stack.fake.minted) == 1  # one token for the checkout and every report
        assert stack.fake.minted[0] not in str(check.history)


async def test_concurrent_signed_pushes_to_one_branch_run_one_at_a_time_and_the_last_wins(
    stack: Stack,
) -> None:
    """2 and 5 pushes at once, and 5 pushes 10 ms apart, each round on new commits."""
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    for count, spacing_s in ((2, 0.0), (5, 0.0), (5, 0.01)):
        shas = [
            fake.commit(repo, {"train.yaml": f"run: |\n  echo {n}\n  sleep 1\n"})
            for n in range(count)
        ]

        async def push(index: int, sha: str, spacing_s: float = spacing_s) -> str:
            await asyncio.sleep(index * spacing_s)
            payload = fake.push_payload(repo, "refs/heads/main", sha, sender="alice")
            dispatched = await stack.dispatched(await stack.deliver("push", payload))
            assert dispatched.started
            return dispatched.run_id

        # At once, the bot's receive order is the order the requests happen to be read in.
        run_ids = await asyncio.gather(*(push(i, sha) for i, sha in enumerate(shas)))
        runs = [await stack.finished(run_id) for run_id in run_ids]
        by_state = {run.commit: run.state for run in runs}
        assert sorted(by_state.values(), key=str) == sorted(
            [RunState.SUCCEEDED] + [RunState.CANCELLED] * (count - 1), key=str
        ), [(r.run_id, r.state, r.error) for r in runs]
        if spacing_s:
            assert by_state[shas[-1]] is RunState.SUCCEEDED
        computed = sorted(
            (run for run in runs if run.stages and run.stages[0].started_at),
            key=lambda run: run.stages[0].started_at,
        )
        for earlier, later in itertools.pairwise(computed):
            assert later.stages[0].started_at >= earlier.finished_at
        for sha in shas:
            # A push superseded before its pipeline file was read stays silent, as unwatched ones.
            checks = [check.data["conclusion"] for check in fake.check_runs_for(repo, sha)]
            if by_state[sha] is RunState.SUCCEEDED:
                assert checks == ["success"]
            else:
                assert checks in ([], ["cancelled"])
    assert clusters_left(stack.settings) == []
