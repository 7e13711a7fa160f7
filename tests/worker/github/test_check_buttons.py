"""The check run's buttons and GitHub's own Re-run end to end: signed `check_run` / `check_suite`
deliveries to the bot, the permission checked through the API, the run re-run or cancelled by a
real worker, refusals answered where GitHub lets skyrun write."""

from __future__ import annotations

from tests.fakes.github import FakeCheckRun
from tests.runs import wait_stage_running
from tests.worker.github.stack import PIPELINE, SLOW_TRAIN, Stack, unique_repo
from worker.contract import RunState
from worker.github.activities import CHECK_NOTE_TITLE, NOTE_TITLES
from worker.github.models import ReplyKind
from worker.github.reporter import CANCEL_ACTION, RERUN_ACTION
from worker.github.texts import STAGES_HEADING
from worker.runcontrol import RunControl

DENIED_NOTE = "🔒 Nothing was done: @bob needs write access"


def identifiers(check: FakeCheckRun) -> list[str]:
    return [action["identifier"] for action in check.data.get("actions") or []]


async def click(
    stack: Stack, check: FakeCheckRun, identifier: str, user: str
) -> tuple[str, list[str]]:
    payload = stack.fake.check_run_payload(
        check, "requested_action", sender=user, identifier=identifier
    )
    result = await stack.commanded(await stack.deliver("check_run", payload))
    return result.outcome, result.run_ids


async def requested_by(control: RunControl, run_id: str) -> str:
    summary = await control.summary(run_id)
    assert summary is not None
    return summary.requested_by


async def comment_run(stack: Stack, repo: str) -> tuple[int, str, str]:
    """A `/skyrun EPOCHS=2` run on a pull request, finished: (PR number, run id, commit)."""
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    fake.commit(repo, {"x.txt": "1"}, branch="feature")
    pull = fake.open_pull(repo, "feature", user="acme")
    fake.grant(repo, "alice", "write")
    result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun EPOCHS=2"))
    progress = await stack.finished(result.run_ids[0])
    assert progress.state is RunState.SUCCEEDED, progress.error
    return pull.number, progress.run_id, progress.commit


async def test_rerun_button_starts_the_same_run_again_for_a_writer(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    number, run_id, sha = await comment_run(stack, repo)
    (check,) = fake.check_runs_for(repo, sha)
    assert check.data["actions"] == [RERUN_ACTION]  # once finished: Re-run only
    assert any(h.get("actions") == [CANCEL_ACTION] for h in check.history)  # while running
    (sticky,) = fake.bot_comments(repo, number)
    edits_before = len(sticky.history)

    outcome, run_ids = await click(stack, check, "rerun", "alice")
    progress = await stack.finished(run_ids[0])

    # Same commit, stages and envs make the same run id: a new execution of it.
    assert (outcome, run_ids) == ("started", [run_id])
    assert progress.state is RunState.SUCCEEDED and progress.commit == sha
    assert await requested_by(stack.control, run_id) == "alice"
    runs = fake.check_runs_for(repo, sha)
    assert len(runs) == 2 and all(r.data["conclusion"] == "success" for r in runs)
    assert all(r.data["external_id"] == run_id for r in runs)
    # The same run's sticky comment reports the re-run; the click itself gets no reply.
    assert fake.bot_comments(repo, number) == [sticky]
    assert len(sticky.history) > edits_before and "✅ skyrun run" in sticky.body


async def test_cancel_button_cancels_the_running_run_for_a_writer(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    fake.grant(repo, "alice", "write")
    run_id = await stack.push(repo, "main", fake.head(repo))
    await wait_stage_running(stack.control, run_id, "train")
    (check,) = fake.check_runs_for(repo, fake.head(repo))
    assert identifiers(check) == ["cancel"]

    outcome, run_ids = await click(stack, check, "cancel", "alice")
    progress = await stack.finished(run_id)

    assert (outcome, run_ids) == ("cancelled", [run_id])
    assert progress.state is RunState.CANCELLED
    assert check.data["conclusion"] == "cancelled"
    assert identifiers(check) == ["rerun", "retry"]  # a cancelled stage can be retried
    assert not fake.calls("POST", r"/issues/\d+/comments$")  # no pull request, no reply


async def test_buttons_by_a_user_without_write_access_do_nothing_and_say_so_on_the_pr(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    number, run_id, sha = await comment_run(stack, repo)
    fake.grant(repo, "bob", "read")
    (check,) = fake.check_runs_for(repo, sha)

    outcome, run_ids = await click(stack, check, "rerun", "bob")

    assert (outcome, run_ids) == ("denied", [])
    assert len(fake.check_runs_for(repo, sha)) == 1  # nothing started
    assert await requested_by(stack.control, run_id) == "acme"
    reply = fake.bot_comments(repo, number)[-1].body
    assert DENIED_NOTE in reply and "start runs" in reply and "permission is read" in reply


async def test_a_refused_button_off_a_pull_request_is_noted_on_the_check_run(
    stack: Stack,
) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    run_id = await stack.push(repo, "main", fake.head(repo))
    await wait_stage_running(stack.control, run_id, "train")
    (check,) = fake.check_runs_for(repo, fake.head(repo))

    outcome, _ = await click(stack, check, "cancel", "bob")  # bob: no role at all

    assert outcome == "denied"
    progress = await stack.control.progress(run_id)
    assert progress is not None and progress.state is RunState.RUNNING
    title = CHECK_NOTE_TITLE.format(what=NOTE_TITLES[ReplyKind.DENIED])
    assert check.data["output"]["title"] == title
    summary = check.data["output"]["summary"]
    assert DENIED_NOTE in summary and "cancel runs" in summary
    # The run's results stay under the note (their cost so far changes as the run goes on).
    assert STAGES_HEADING.splitlines()[0] in summary and "`train`" in summary
    assert not fake.calls("POST", r"/issues/\d+/comments$")
    await stack.control.cancel(run_id)
    await stack.finished(run_id)


async def test_githubs_rerun_of_the_check_run_and_of_the_suite_rerun(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    fake.grant(repo, "alice", "write")
    sha = fake.head(repo)
    run_id = await stack.push(repo, "main", sha)
    await stack.finished(run_id)
    (check,) = fake.check_runs_for(repo, sha)

    rerequested = fake.check_run_payload(check, "rerequested", sender="alice")
    by_run = await stack.commanded(await stack.deliver("check_run", rerequested))
    await stack.finished(run_id)
    by_suite = await stack.commanded(
        await stack.deliver("check_suite", fake.check_suite_payload(repo, sha, sender="alice"))
    )
    progress = await stack.finished(run_id)

    assert (by_run.outcome, by_run.run_ids) == ("started", [run_id])
    assert (by_suite.outcome, by_suite.run_ids) == ("started", [run_id])
    assert progress.state is RunState.SUCCEEDED
    runs = fake.check_runs_for(repo, sha)
    assert len(runs) == 3 and all(r.data["conclusion"] == "success" for r in runs)


async def test_rerun_of_a_run_this_deployment_does_not_know_is_refused(stack: Stack) -> None:
    repo = unique_repo()
    fake = stack.fake
    fake.add_repo(repo, PIPELINE)
    sha = fake.head(repo)
    check = fake.add_check_run(repo, sha, external_id="ml-0000000000")

    outcome, run_ids = await click(stack, check, "rerun", "acme")

    assert (outcome, run_ids) == ("denied", [])
    assert "ml-0000000000 of this check run is not known" in check.data["output"]["summary"]


async def test_a_check_run_naming_another_repositorys_run_cannot_cancel_or_rerun_it(
    stack: Stack,
) -> None:
    fake = stack.fake
    victim, other = unique_repo(), unique_repo()
    fake.add_repo(victim, {**PIPELINE, "train.yaml": SLOW_TRAIN})
    fake.add_repo(other, PIPELINE)
    run_id = await stack.push(victim, "main", fake.head(victim))
    await wait_stage_running(stack.control, run_id, "train")
    # acme owns `other`: write access there says nothing about `victim`'s runs.
    forged = fake.add_check_run(other, fake.head(other), external_id=run_id)

    cancel, _ = await click(stack, forged, "cancel", "acme")
    rerun, _ = await click(stack, forged, "rerun", "acme")

    assert (cancel, rerun) == ("denied", "denied")
    assert f"run {run_id} of this check run is not known" in forged.data["output"]["summary"]
    progress = await stack.control.progress(run_id)
    assert progress is not None and progress.state is RunState.RUNNING
    assert len(fake.check_runs_for(victim, fake.head(victim))) == 1
    await stack.control.cancel(run_id)
    await stack.finished(run_id)
