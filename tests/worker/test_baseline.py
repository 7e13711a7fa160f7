"""One baseline rule, on real runs: the latest earlier success of the base (or same) branch,
kept by the reporters, and shown alike in the PR comment, the check run, Slack and the run page."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, message_text
from tests.runs import request_for, wait_finished
from tests.worker.github.stack import github_stack, unique_repo
from worker.baseline import HANDLE, HANDLE_FINAL, Baseline, Baselines, baseline_ref
from worker.contract import (
    GitHubTarget,
    RunProgress,
    RunState,
    StageProgress,
    Trigger,
    lane_for_pr,
)
from worker.formatting import format_change
from worker.runcontrol import RunControl
from worker.settings import Settings
from worker.slack import texts as slack_texts

PIPELINE = "stages: [{name: eval, task: eval.yaml}]\n"
EVAL = "run: |\n  echo '::metric accuracy={value}'\n  exit {code}\n"


async def run(
    control: RunControl,
    git_repo: Callable[..., Path],
    value: float,
    *,
    code: int = 0,
    **fields: object,
) -> RunProgress:
    repo = git_repo({".skyrun.yaml": PIPELINE, "eval.yaml": EVAL.format(value=value, code=code)})
    outcome = await control.start(request_for(repo, **fields))
    return await wait_finished(control, outcome.run_id)


async def eventually(baselines: Baselines, progress: RunProgress, run_id: str | None) -> None:
    """Visibility lags: wait until the lookup sees the expected baseline (or none)."""
    found: Baseline | None = None
    for _ in range(100):
        found = await baselines.of(progress)
        if (found.run_id if found else None) == run_id:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"baseline {found} != {run_id}")


async def test_the_same_baseline_rule_for_branch_and_pull_request_runs(
    client: Client, control: RunControl, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    baselines = Baselines(client, settings.temporal_task_queue)
    first = await run(control, git_repo, 0.80, trigger=Trigger.PUSH)
    # Whatever triggered it: a Slack run of main is main's newest success.
    second = await run(control, git_repo, 0.85, trigger=Trigger.SLACK)
    failed = await run(control, git_repo, 0.99, code=1, trigger=Trigger.PUSH)
    assert (first.state, second.state, failed.state) == (
        RunState.SUCCEEDED,
        RunState.SUCCEEDED,
        RunState.FAILED,
    )
    await eventually(baselines, failed, second.run_id)
    await eventually(baselines, second, first.run_id)  # started before it, not after
    await eventually(baselines, first, None)

    pr = await run(
        control,
        git_repo,
        0.9,
        ref="feature-x",
        trigger=Trigger.COMMENT,
        lane=lane_for_pr("acme/x", 7),
        github=GitHubTarget(pr_number=7, base_branch="main"),
    )
    assert baseline_ref(pr) == "main"
    await eventually(baselines, pr, second.run_id)
    found = await baselines.of(pr)
    assert found == Baseline(second.run_id, second.commit, "main", {"accuracy": 0.85})
    assert Baseline.loads(found.dumps()) == found

    # Another deployment's runs on the same Temporal namespace are never a baseline.
    assert await Baselines(client, "another-deployment").of(failed) is None


class Counting(Baselines):
    """Baselines whose lookup answers from a list (an exception is raised) and is counted."""

    def __init__(self, *answers: Baseline | Exception | None) -> None:
        super().__init__(client=None, task_queue="q")  # type: ignore[arg-type]
        self.answers = list(answers)
        self.lookups = 0

    async def of(self, progress: RunProgress) -> Baseline | None:
        self.lookups += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def pr_progress(state: RunState, *, metrics: bool = True) -> RunProgress:
    """Run 7 of PR 7 (head feature-x, base main), with or without metrics."""
    stages = [StageProgress("eval", "eval", metrics={"accuracy": 0.9} if metrics else {})]
    return RunProgress(
        "acme-x-pr-7",
        "acme/x",
        "feature-x",
        "c" * 40,
        Trigger.COMMENT,
        "amy",
        state=state,
        stages=stages,
        pr_number=7,
        base_ref="main",
    )


MAIN = Baseline("acme-x-main-1", "a" * 40, "main", {"accuracy": 0.8})
NEWER = Baseline("acme-x-main-2", "b" * 40, "main", {"accuracy": 0.85})


async def test_a_reporter_looks_up_once_while_running_and_once_more_when_finished() -> None:
    baselines = Counting(MAIN, NEWER)
    handles: dict[str, str] = {}
    assert await baselines.remembered(pr_progress(RunState.RUNNING, metrics=False), handles) is None
    assert (baselines.lookups, handles) == (0, {})  # nothing to compare yet: no lookup

    running = pr_progress(RunState.RUNNING)
    assert await baselines.remembered(running, handles) == MAIN
    assert await baselines.remembered(running, dict(handles)) == MAIN  # a retried report
    assert baselines.lookups == 1 and HANDLE_FINAL not in handles

    # Finished: a run of main started before this one may have succeeded meanwhile.
    finished = pr_progress(RunState.SUCCEEDED)
    assert await baselines.remembered(finished, handles) == NEWER
    assert handles[HANDLE_FINAL] == "1"
    assert await baselines.remembered(finished, handles) == NEWER
    assert baselines.lookups == 2
    # What a reporter keeps is what it read back from its handles on the next call.
    assert Baseline.loads(handles[HANDLE]) == NEWER


async def test_no_baseline_is_kept_and_a_failed_lookup_is_tried_again() -> None:
    baselines = Counting(TimeoutError("visibility is slow"), None)
    handles: dict[str, str] = {}
    finished = pr_progress(RunState.SUCCEEDED)
    assert await baselines.remembered(finished, handles) is None
    assert HANDLE not in handles  # unknown: a reporter must not say "none found"
    assert await baselines.remembered(finished, handles) is None
    assert handles == {HANDLE: "", HANDLE_FINAL: "1"}  # known: there is none
    assert await baselines.remembered(finished, handles) is None
    assert baselines.lookups == 2

    # A pull request whose base branch is unknown has nothing to be compared with.
    unknown = dataclasses.replace(finished, base_ref="")
    assert await Counting().remembered(unknown, {}) is None


SURFACES = {
    ".skyrun.yaml": (
        "on: {push: [main]}\n"
        "notify: {slack: '#ml-runs'}\n"
        "stages:\n  - {name: train, task: train.yaml}\n"
    ),
    "train.yaml": "run: echo '::metric accuracy=0.75'\n",
}


async def test_a_pull_request_run_shows_one_baseline_and_one_change_everywhere(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Before one baseline, the comment and the page said +2 against main's run while Slack said
    "No earlier successful run of feature-x to compare with"."""
    async with (
        FakeSlack() as slack,
        github_stack(
            client,
            make_settings,
            tmp_path,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
        ) as stack,
    ):
        fake, repo = stack.fake, unique_repo()
        fake.add_repo(repo, SURFACES)
        base_id = await stack.push(repo, "main", fake.head(repo))
        base = await stack.finished(base_id)
        assert base.metrics == {"accuracy": 0.75}
        fake.commit(
            repo, {"train.yaml": "run: echo '::metric accuracy=0.77'\n"}, branch="feature-x"
        )
        pull = fake.open_pull(repo, "feature-x", user="acme")
        result = await stack.command(fake.add_comment(repo, pull.number, "acme", "/skyrun"))
        run = await stack.finished(result.run_ids[0])
        assert (run.ref, run.pr_number, run.base_ref) == ("feature-x", pull.number, "main")
        change = format_change(0.77, 0.75)
        assert change == "+0.02 (+2.7%)"
        base_url = f"http://skyrun.test/runs/{base_id}"

        # The PR comment and the check run.
        (comment,) = fake.bot_comments(repo, pull.number)
        assert f"[`main`]({base_url}) @ `{base.commit[:7]}`" in comment.body
        assert f"| `accuracy` | 0.77 | 0.75 | {change} |" in comment.body
        (check,) = fake.check_runs_for(repo, run.commit)
        assert f"| `accuracy` | 0.77 | 0.75 | {change} |" in check.data["output"]["summary"]

        # The Slack message in the pipeline's notify channel.
        marker = slack_texts.CONTEXT_RUN.format(run_id=run.run_id)
        (message,) = [m for m in slack.top_level("#ml-runs") if marker in message_text(m)]
        text = message_text(message)
        assert f"`accuracy` *0.77* ({change} vs last success)" in text
        note = slack_texts.BASELINE_NOTE.format(url=base_url, run_id=base_id, branch="`main`")
        assert note in text
        assert "No earlier successful run" not in text

        # The run page's JSON.
        response = await stack.http.get(f"/api/runs/{run.run_id}")
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["baseline"]["run_id"] == base_id
        assert (page["baseline"]["ref"], page["baseline"]["commit"]) == ("main", base.commit)
        assert page["baseline"]["url"] == base_url
        value, before = page["metrics"]["accuracy"], page["baseline"]["metrics"]["accuracy"]
        assert format_change(value, before) == change
        assert page["baseline"]["deltas"]["accuracy"] == pytest.approx(0.02)
