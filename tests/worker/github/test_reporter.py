"""The GitHub reporter against the fake GitHub: check run, sticky comment, reactions, retries."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from tests.fakes.github import FakeGitHub
from tests.worker.github.stack import REPO
from worker.baseline import HANDLE, Baseline, Baselines
from worker.contract import (
    GitHubTarget,
    RunProgress,
    RunRequest,
    RunState,
    StageProgress,
    StageState,
    Trigger,
)
from worker.github import texts
from worker.github.auth import ClientOptions, GitHubAuth
from worker.github.reporter import GitHubReporter
from worker.links import Links
from worker.models import ReportInput
from worker.reporting import ReportingActivities
from worker.settings import Settings


@pytest.fixture
def reporter(fake: FakeGitHub, make_settings: Callable[..., Settings]) -> GitHubReporter:
    settings = make_settings(GITHUB_TOKEN=fake.token, GITHUB_API_URL=fake.url)
    return GitHubReporter(GitHubAuth(settings, ClientOptions.unpaced()), Links(settings))


def report(
    run_id: str,
    state: RunState,
    trigger: Trigger,
    commit: str,
    handles: dict[str, str] | None = None,
    *,
    pr_number: int | None = None,
    comment_id: int | None = None,
    base_branch: str | None = None,
) -> ReportInput:
    stage = StageProgress("train", "train", StageState.RUNNING, started_at="2024-01-01T00:00:01")
    if state.finished:
        stage.state = StageState.SUCCEEDED
    target = GitHubTarget(pr_number=pr_number, comment_id=comment_id, base_branch=base_branch)
    request = RunRequest(repo=REPO, clone_url="", ref="feature", trigger=trigger, github=target)
    progress = RunProgress(
        run_id,
        REPO,
        "feature",
        commit,
        trigger,
        "acme",
        state=state,
        stages=[] if state is RunState.QUEUED else [stage],
        started_at="2024-01-01T00:00:00+00:00",
        finished_at="2024-01-01T00:01:00+00:00" if state.finished else "",
    )
    return ReportInput("github", run_id, request, progress, handles or {})


async def test_pull_request_runs_stay_quiet_until_they_run(
    fake: FakeGitHub, reporter: GitHubReporter
) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    target: dict[str, Any] = {"pr_number": pull.number, "base_branch": "main"}
    for state in (RunState.QUEUED, RunState.DENIED, RunState.SKIPPED):
        assert (
            await reporter.report(report("r-1", state, Trigger.PULL_REQUEST, sha, **target)) == {}
        )
    assert fake.requests == []

    handles = await reporter.report(
        report("r-1", RunState.RUNNING, Trigger.PULL_REQUEST, sha, **target)
    )
    assert set(handles) >= {"check_run", "comment", "pr"}
    assert fake.check_runs_for(REPO, sha)[0].data["status"] == "in_progress"


async def test_a_retried_first_report_edits_what_the_failed_attempt_created(
    fake: FakeGitHub, reporter: GitHubReporter
) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    data = report("r-2", RunState.QUEUED, Trigger.COMMENT, sha, pr_number=pull.number)
    activities = ReportingActivities([reporter])
    env = ActivityEnvironment()

    await env.run(activities.report_progress, data)  # succeeded, but its result was lost
    env.info = dataclasses.replace(env.info, attempt=2)
    retried = await env.run(activities.report_progress, data)

    assert len(fake.bot_comments(REPO, pull.number)) == 1
    assert len(fake.check_runs_for(REPO, sha)) == 1
    assert retried.handles["comment"] == str(fake.bot_comments(REPO, pull.number)[0].id)
    assert len(fake.calls("POST", "/check-runs$")) == 1


async def test_a_newer_run_folds_the_older_runs_comments(
    fake: FakeGitHub, reporter: GitHubReporter
) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    first = await reporter.report(
        report("r-old", RunState.RUNNING, Trigger.COMMENT, sha, pr_number=pull.number)
    )
    await reporter.report(
        report("r-old", RunState.CANCELLED, Trigger.COMMENT, sha, first, pr_number=pull.number)
    )
    impostor = fake.add_comment(REPO, pull.number, "mallory", "<!-- skyrun:run fake -->\nhi")

    second = await reporter.report(
        report("r-new", RunState.RUNNING, Trigger.COMMENT, sha, pr_number=pull.number)
    )

    old, new = fake.bot_comments(REPO, pull.number)
    assert old.body.split("\n")[1] == texts.OUTDATED_TAG
    assert "[`r-new`](http://skyrun.test/runs/r-new)" in old.body and "🚫 skyrun run" in old.body
    assert "🏃 skyrun run" in new.body and texts.OUTDATED_TAG not in new.body
    assert fake.comments[impostor.id].history == [impostor.body]  # not ours: left alone
    await reporter.report(
        report("r-new", RunState.SUCCEEDED, Trigger.COMMENT, sha, second, pr_number=pull.number)
    )
    assert len(fake.comments[old.id].history) == 3  # folded once, not again


async def test_a_push_run_comments_on_its_branchs_pull_request_found_once(
    fake: FakeGitHub, reporter: GitHubReporter
) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    handles = await reporter.report(report("r-3", RunState.RUNNING, Trigger.PUSH, sha))
    assert handles["pr"] == ""  # no pull request yet: only the check run
    pull = fake.open_pull(REPO, "feature", user="acme")
    await reporter.report(report("r-3", RunState.SUCCEEDED, Trigger.PUSH, sha, handles))

    assert len(fake.calls("GET", "/pulls$")) == 1
    assert fake.bot_comments(REPO, pull.number) == []
    assert fake.check_runs_for(REPO, sha)[0].data["conclusion"] == "success"


async def test_a_pull_request_run_is_compared_with_its_base_branchs_run_looked_up_once(
    fake: FakeGitHub, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    main = Baseline("r-main", "f" * 40, "main", {"accuracy": 0.8})

    async def of(self: Baselines, progress: RunProgress) -> Baseline | None:
        asked.append(f"{progress.run_id} on {progress.base_ref} in {self.task_queue}")
        return main

    monkeypatch.setattr(Baselines, "of", of)
    settings = make_settings(GITHUB_TOKEN=fake.token, GITHUB_API_URL=fake.url)
    baselines = Baselines(None, settings.temporal_task_queue)  # type: ignore[arg-type]
    reporter = GitHubReporter(
        GitHubAuth(settings, ClientOptions.unpaced()), Links(settings), baselines
    )
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")

    def data(state: RunState, handles: dict[str, str] | None = None) -> ReportInput:
        out = report("r-4", state, Trigger.COMMENT, sha, handles, pr_number=pull.number)
        out.progress.pr_number, out.progress.base_ref = pull.number, "main"
        out.progress.stages[0].metrics = {"accuracy": 0.9}
        return out

    handles = await reporter.report(data(RunState.RUNNING))
    assert Baseline.loads(handles[HANDLE]) == main
    handles = await reporter.report(data(RunState.RUNNING, handles))
    handles = await reporter.report(data(RunState.SUCCEEDED, handles))
    handles = await reporter.report(data(RunState.SUCCEEDED, handles))  # a retried final report
    # Once while it runs, once when it has finished; always main's, in this deployment.
    assert asked == [f"r-4 on main in {settings.temporal_task_queue}"] * 2
    (comment,) = fake.bot_comments(REPO, pull.number)
    assert "| `accuracy` | 0.9 | 0.8 | +0.1 (+12.5%) |" in comment.body


async def test_the_rocket_goes_on_the_command_comment_once_the_run_starts(
    fake: FakeGitHub, reporter: GitHubReporter
) -> None:
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    asked = fake.add_comment(REPO, pull.number, "acme", "/skyrun")
    target: dict[str, Any] = {"pr_number": pull.number, "comment_id": asked.id}

    handles = await reporter.report(report("r-4", RunState.QUEUED, Trigger.COMMENT, sha, **target))
    assert fake.reactions(asked) == []
    handles.update(
        await reporter.report(
            report("r-4", RunState.RUNNING, Trigger.COMMENT, sha, handles, **target)
        )
    )
    await reporter.report(
        report("r-4", RunState.SUCCEEDED, Trigger.COMMENT, sha, handles, **target)
    )

    assert fake.reactions(asked) == ["rocket"]
    assert len(fake.calls("POST", "/reactions$")) == 1


async def test_every_secret_the_worker_holds_is_masked_in_the_comment_and_check_run(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        GITHUB_TOKEN=fake.token,
        GITHUB_API_URL=fake.url,
        SLACK_BOT_TOKEN="xoxb-not-githubs-secret",
        TEMPORAL_API_KEY="temporal-not-githubs-secret",
    )
    auth = GitHubAuth(settings, ClientOptions.unpaced())
    auth.masker.add("ghs_minted_elsewhere_token")  # as minting does
    reporter = GitHubReporter(auth, Links(settings))
    secrets = [fake.token, "xoxb-not-githubs-secret", "temporal-not-githubs-secret"]
    secrets.append("ghs_minted_elsewhere_token")
    sha = fake.commit(REPO, {"a": "1"}, branch="feature")
    pull = fake.open_pull(REPO, "feature", user="acme")
    data = report("r-9", RunState.FAILED, Trigger.COMMENT, sha, pr_number=pull.number)
    data.progress.error = "stage 'train' failed: " + " ".join(secrets)
    stage = data.progress.stages[0]
    stage.state, stage.error, stage.log_tail = StageState.FAILED, "boom", list(secrets)
    stage.report = "leaked: " + " ".join(secrets)

    await reporter.report(data)

    (comment,) = fake.bot_comments(REPO, pull.number)
    (check,) = fake.check_runs_for(REPO, sha)
    assert "leaked: *** *** *** ***" in comment.body
    for text in (comment.body, str(check.data)):
        for secret in secrets:
            assert secret not in text
