"""Retry from the failed stage on GitHub end to end: `/skyrun retry` comments and the check run's
`Retry failed stage` button, as signed deliveries to the bot, on a real worker and Temporal, with
results and refusals on the fake GitHub."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.github import FakeCheckRun
from tests.worker.github.stack import Stack, unique_repo
from worker.contract import RunState, StageState
from worker.github import texts
from worker.github.reporter import RERUN_ACTION, RETRY_ACTION

# eval fails on its first execution only (a marker in the lane's bucket); every stage counts its
# executions there.
FLAKY = {
    ".skyrun.yaml": (
        "stages:\n"
        "  - {name: prepare, task: prepare.yaml}\n"
        "  - {name: train, task: train.yaml, cluster: train}\n"
        "  - {name: eval, task: eval.yaml, cluster: train}\n"
    ),
    "prepare.yaml": (
        "run: |\n  echo x >> $DATA_BUCKET_URL/prepare.count\n  echo '::metric rows=10'\n"
    ),
    "train.yaml": "run: |\n  echo x >> $DATA_BUCKET_URL/train.count\n",
    "eval.yaml": (
        "run: |\n"
        "  echo x >> $DATA_BUCKET_URL/eval.count\n"
        "  [ -f $DATA_BUCKET_URL/eval.tried ] || { touch $DATA_BUCKET_URL/eval.tried; exit 4; }\n"
        "  echo '::metric accuracy=0.9'\n"
    ),
}


def executions(stack: Stack, stage: str) -> int:
    (path,) = (stack.settings.data_path / "buckets").glob(f"*/{stage}.count")
    return len(Path(path).read_text().splitlines())


async def failed_pr_run(stack: Stack, repo: str) -> tuple[int, str, str]:
    """A `/skyrun` run on a pull request whose eval failed: (PR number, run id, commit)."""
    fake = stack.fake
    fake.add_repo(repo, FLAKY)
    fake.commit(repo, {"x.txt": "1"}, branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")
    fake.grant(repo, "alice", "write")
    fake.grant(repo, "bob", "read")
    result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun LR=0.1"))
    progress = await stack.finished(result.run_ids[0])
    assert progress.state is RunState.FAILED, progress.error
    return pull.number, progress.run_id, progress.commit


def retry_comment(stack: Stack, repo: str, number: int, run_id: str) -> str:
    return next(
        c.body for c in stack.fake.bot_comments(repo, number) if f"skyrun:run {run_id} " in c.body
    )


async def click(stack: Stack, check: FakeCheckRun, user: str) -> tuple[str, list[str]]:
    payload = stack.fake.check_run_payload(
        check, "requested_action", sender=user, identifier="retry"
    )
    result = await stack.commanded(await stack.deliver("check_run", payload))
    return result.outcome, result.run_ids


async def test_skyrun_retry_reuses_prepare_reruns_train_and_eval_and_says_so(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    number, first, sha = await failed_pr_run(stack, repo)
    (failed_comment,) = fake.bot_comments(repo, number)
    assert texts.NEXT_RETRY in failed_comment.body
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["actions"] == [RERUN_ACTION, RETRY_ACTION]

    asked = fake.add_comment(repo, number, "alice", "/skyrun retry")
    result = await stack.command(asked)
    assert (result.outcome, result.run_ids) == ("retried", [f"{first}-retry"])
    progress = await stack.finished(result.run_ids[0])

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.commit == sha and progress.retry_of == first
    assert progress.requested_by == "alice"
    assert [s.reused_from for s in progress.stages] == [first, "", ""]
    assert all(s.state is StageState.SUCCEEDED for s in progress.stages)
    assert progress.metrics == {"rows": 10.0, "accuracy": 0.9}
    assert (executions(stack, "prepare"), executions(stack, "train")) == (1, 2)
    assert executions(stack, "eval") == 2
    assert "rocket" in fake.reactions(asked) and "eyes" in fake.reactions(asked)
    body = retry_comment(stack, repo, number, progress.run_id)
    assert f"Retry of [`{first}`](http://skyrun.test/runs/{first})" in body
    assert f"reused (not run again; result, metrics and log of `{first}`): `prepare`" in body
    assert (
        "runs again: `train` (shares cluster train with eval, which failed), `eval` (it failed)"
    ) in body
    assert "| `prepare` | ♻️ reused |" in body
    assert f"[log](http://skyrun.test/runs/{first}/logs/prepare)" in body
    assert f"[log](http://skyrun.test/runs/{progress.run_id}/logs/train)" in body
    retry_check = next(c for c in fake.check_runs_for(repo, sha) if c.id != check.id)
    assert retry_check.data["conclusion"] == "success"
    assert retry_check.data["actions"] == [RERUN_ACTION]  # nothing left to retry
    assert "Retry of" in retry_check.data["output"]["summary"]

    # The PR's latest run (the retry) succeeded: refused with the reason.
    again = await stack.command(fake.add_comment(repo, number, "alice", "/skyrun retry"))
    assert again.outcome == "retry_refused"
    reply = fake.bot_comments(repo, number)[-1].body
    assert "♻️ Nothing was retried" in reply and "succeeded: every stage passed" in reply

    # The check run of the first run: already retried, exactly once.
    outcome, run_ids = await click(stack, check, "alice")
    assert (outcome, run_ids) == ("already_retried", [progress.run_id])
    reply = fake.bot_comments(repo, number)[-1].body
    assert f"was already retried as [`{progress.run_id}`]" in reply
    assert executions(stack, "prepare") == 1


async def test_retry_by_a_user_without_write_access_is_refused_with_a_reply(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    number, first, sha = await failed_pr_run(stack, repo)

    result = await stack.command(fake.add_comment(repo, number, "bob", "/skyrun retry"))
    assert result.outcome == "denied"
    reply = fake.bot_comments(repo, number)[-1].body
    assert "@bob needs write access" in reply and "retry runs" in reply
    (check,) = fake.check_runs_for(repo, sha)
    assert await click(stack, check, "bob") == ("denied", [])
    assert "retry runs" in fake.bot_comments(repo, number)[-1].body
    assert await stack.control.summary(f"{first}-retry") is None  # nothing started
    assert executions(stack, "eval") == 1


async def test_retry_is_refused_once_the_head_moved_or_the_commit_left_the_pull_request(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    number, first, sha = await failed_pr_run(stack, repo)
    moved = fake.commit(repo, {"x.txt": "2"}, branch="feature")

    result = await stack.command(fake.add_comment(repo, number, "alice", "/skyrun retry"))
    assert result.outcome == "denied"
    reply = fake.bot_comments(repo, number)[-1].body
    assert f"head moved to `{moved[:7]}` since run `{first}` ran `{sha[:7]}`" in reply

    fake.force_push(repo, "feature", fake.commit(repo, {"y.txt": "1"}, branch="other"))
    result = await stack.command(fake.add_comment(repo, number, "alice", "/skyrun retry"))
    assert result.outcome == "denied"
    reply = fake.bot_comments(repo, number)[-1].body
    assert f"commit `{sha[:7]}` of run `{first}` is no longer part of pull request" in reply
    assert await stack.control.summary(f"{first}-retry") is None


async def test_the_retry_button_retries_the_check_run_s_run(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    number, first, sha = await failed_pr_run(stack, repo)
    (check,) = fake.check_runs_for(repo, sha)

    outcome, run_ids = await click(stack, check, "alice")
    assert (outcome, run_ids) == ("retried", [f"{first}-retry"])
    progress = await stack.finished(run_ids[0])

    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.requested_by == "alice" and progress.retry_of == first
    assert [s.reused_from for s in progress.stages] == [first, "", ""]
    assert executions(stack, "prepare") == 1
    assert "Retry of" in retry_comment(stack, repo, number, progress.run_id)
