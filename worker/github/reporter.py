"""The GitHub reporter: a `skyrun` check run on the commit and one sticky comment per run.

Called by the workflow at every change with the handles the previous call returned (check run,
comment, pull request, baseline), so each report edits in place and compares with the same run
(worker/baseline.py). PyGithub blocks, so the API work runs in a thread. A retried report finds
what an earlier attempt created instead of duplicating.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from github.GithubException import GithubException
from github.IssueComment import IssueComment
from github.Repository import Repository
from temporalio import activity

from worker.baseline import HANDLE as BASELINE
from worker.baseline import Baseline, Baselines, baseline_ref
from worker.contract import RunProgress, RunState, Trigger
from worker.formatting import parse_time
from worker.github import render, texts
from worker.github.auth import GitHubAuth, api_errors
from worker.github.render import RunView
from worker.links import Links
from worker.masking import Masker
from worker.models import ReportInput
from worker.retry import refusal

log = logging.getLogger(__name__)

# Handles kept between reports.
CHECK_RUN = "check_run"
CHECK_SHA = "check_sha"
COMMENT = "comment"
PULL = "pr"
ROCKET = "rocket"
OUTDATED = "outdated"

QUIET_UNTIL_RUNNING = (RunState.QUEUED, RunState.DENIED, RunState.SKIPPED)
QUIET_TRIGGERS = (Trigger.PULL_REQUEST, Trigger.MERGE_GROUP)
"""Events, not people, start these: a run that did not get to run posts nothing."""
# The check run's buttons (GitHub's requested actions: label <= 20 characters, description
# <= 40, identifier <= 20); bot/github/events.py maps the identifiers back to commands.
RERUN_ACTION = {
    "label": "Re-run",
    "description": "Run this commit again, same settings",
    "identifier": "rerun",
}
CANCEL_ACTION = {
    "label": "Cancel",
    "description": "Cancel this run, tear down clusters",
    "identifier": "cancel",
}
RETRY_ACTION = {
    "label": "Retry failed stage",
    "description": "Rerun from the failed stage, reuse rest",
    "identifier": "retry",
}
"""Offered once a run ended with a stage to retry from (worker/retry.py decides)."""


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


def _started(progress: RunProgress) -> bool:
    return progress.state is RunState.RUNNING or any(s.started_at for s in progress.stages)


class GitHubReporter:
    name = "github"

    def __init__(self, auth: GitHubAuth, links: Links, baselines: Baselines | None = None) -> None:
        self.auth = auth
        self.links = links
        self.baselines = baselines

    async def report(self, data: ReportInput) -> dict[str, str]:
        target = data.request.github
        if target is None:
            return {}
        handles = dict(data.handles)
        if not handles and self._quiet(data):
            return {}
        if PULL not in handles:
            handles.update(await asyncio.to_thread(self._find_pull, data))
        baseline: Baseline | None = None
        if self.baselines is not None:
            baseline = await self.baselines.remembered(data.progress, handles)
        view = RunView(
            data.progress,
            data.request,
            self.links,
            # Only a baseline looked for and not found is worth saying so.
            base_ref=baseline_ref(data.progress) if BASELINE in handles else "",
            baseline=baseline,
        )
        handles.update(await asyncio.to_thread(self._publish, data, view, handles, _attempt()))
        return handles

    @staticmethod
    def _quiet(data: ReportInput) -> bool:
        """A pull request or merge group event that did not get to run posts nothing (no noise)."""
        return data.request.trigger in QUIET_TRIGGERS and data.progress.state in QUIET_UNTIL_RUNNING

    def _repo(self, data: ReportInput) -> Repository:
        target = data.request.github
        installation = target.installation_id if target else None
        return self.auth.client(data.request.repo, installation).get_repo(data.request.repo)

    def _find_pull(self, data: ReportInput) -> dict[str, str]:
        """The pull request to comment on: the run's own, or the open one of a pushed branch."""
        target = data.request.github
        assert target is not None
        if target.pr_number:
            return {PULL: str(target.pr_number)}
        if data.request.trigger is not Trigger.PUSH or not data.request.ref:
            return {PULL: ""}
        owner = data.request.repo.split("/", 1)[0]
        with api_errors(self.auth):
            repo = self._repo(data)
            for pull in repo.get_pulls(state="open", head=f"{owner}:{data.request.ref}"):
                return {PULL: str(pull.number)}
        return {PULL: ""}

    def _publish(
        self, data: ReportInput, view: RunView, handles: dict[str, str], attempt: int
    ) -> dict[str, str]:
        progress = data.progress
        masker = self.auth.masker
        out: dict[str, str] = {}
        with api_errors(self.auth):
            repo = self._repo(data)
            if progress.commit and progress.commit != "local":
                out.update(self._check_run(repo, view, handles, masker, attempt))
            if handles.get(PULL):
                out.update(self._comment(repo, int(handles[PULL]), view, handles, masker))
            target = data.request.github
            if (
                target is not None
                and target.comment_id
                and target.pr_number
                and ROCKET not in handles
                and _started(progress)
            ):
                comment = repo.get_issue(target.pr_number).get_comment(target.comment_id)
                comment.create_reaction("rocket")
                out[ROCKET] = "1"
        return out

    def _check_run(
        self,
        repo: Repository,
        view: RunView,
        handles: dict[str, str],
        masker: Masker,
        attempt: int,
    ) -> dict[str, str]:
        progress = view.progress
        fields: dict[str, Any] = {
            "name": texts.CHECK_NAME,
            "details_url": self.links.run(progress.run_id),
            "external_id": progress.run_id,
            "output": render.check_output(view, masker),
        }
        if progress.state in (RunState.QUEUED, RunState.AWAITING_APPROVAL):
            fields["status"] = "queued"
            fields["actions"] = [CANCEL_ACTION]
        elif progress.state is RunState.RUNNING:
            fields["status"] = "in_progress"
            fields["actions"] = [CANCEL_ACTION]
            if started := parse_time(progress.started_at):
                fields["started_at"] = started
        else:
            fields["status"] = "completed"
            fields["actions"] = [RERUN_ACTION]
            if not refusal(progress, progress.run_id):
                fields["actions"].append(RETRY_ACTION)
            fields["conclusion"] = render.conclusion(progress)
            if finished := parse_time(progress.finished_at):
                fields["completed_at"] = finished
        check_id = handles.get(CHECK_RUN) if handles.get(CHECK_SHA) == progress.commit else None
        if not check_id and attempt > 1:
            check_id = self._existing_check_run(repo, progress.commit, progress.run_id)
        if check_id:
            repo.get_check_run(int(check_id)).edit(**fields)
        else:
            check_id = str(repo.create_check_run(head_sha=progress.commit, **fields).id)
        return {CHECK_RUN: check_id, CHECK_SHA: progress.commit}

    @staticmethod
    def _existing_check_run(repo: Repository, sha: str, run_id: str) -> str | None:
        for check in repo.get_commit(sha).get_check_runs(check_name=texts.CHECK_NAME):
            if check.external_id == run_id:
                return str(check.id)
        return None

    def _comment(
        self,
        repo: Repository,
        number: int,
        view: RunView,
        handles: dict[str, str],
        masker: Masker,
    ) -> dict[str, str]:
        run_id = view.progress.run_id
        body = render.run_comment(view, masker)
        issue = repo.get_issue(number)
        out: dict[str, str] = {}
        comment_id = handles.get(COMMENT)
        finished = view.progress.state.finished
        if comment_id:
            issue.get_comment(int(comment_id)).edit(body)
            if finished and handles.get(OUTDATED) != "final":
                # Runs started meanwhile in other lanes may have re-rendered their comments.
                self._mark_outdated(list(issue.get_comments()), int(comment_id), run_id)
                out[OUTDATED] = "final"
            return out
        # First report (or a retry of it): one listing finds our comment and older runs' ones.
        comments = list(issue.get_comments())
        ours = next((c for c in comments if render.is_run_comment(c.body, run_id)), None)
        if ours is not None:
            ours.edit(body)
            created = ours.id
        else:
            created = issue.create_comment(body).id
        self._mark_outdated(comments, created, run_id)
        return {COMMENT: str(created), OUTDATED: "final" if finished else "first"}

    def _mark_outdated(self, comments: list[IssueComment], ours: int, run_id: str) -> None:
        """Fold earlier runs' comments under a note; best effort (never fails the report)."""
        for comment in comments:
            body = comment.body or ""
            if (
                comment.id >= ours
                or not render.is_run_comment(body)
                or render.is_run_comment(body, run_id)
                or render.is_outdated(body)
            ):
                continue
            try:
                comment.edit(render.outdated(body, run_id, self.links))
            except GithubException as err:
                log.warning("could not mark comment %s outdated: %s", comment.id, err)
