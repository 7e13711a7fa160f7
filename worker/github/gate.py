"""Who may spend compute, decided through GitHub's API before anything runs.

Permission is the repository role GitHub reports for the user (write, maintain or admin), never
the comment's `author_association`. A fork's pull request runs only through a maintainer's
comment, and then only the head that was current when they commented.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote

from github.GithubException import UnknownObjectException
from github.Repository import Repository

from worker.contract import RunRequest, Trigger
from worker.formatting import parse_time
from worker.github import texts
from worker.github.auth import GitHubAuth, api_errors
from worker.github.contract import GitHubCommand
from worker.github.models import Resolution
from worker.models import AuthorizeInput, AuthorizeOutput

ALLOWED_PERMISSIONS = frozenset({"admin", "maintain", "write"})
APPROVER_ROLES = frozenset({"admin", "maintain"})
"""Who may approve a run over budget (GitHub's REST `permission` folds maintain into write:
the role is read from `role_name`)."""


class GitHubGate:
    """The `Gate` of pipeline runs, and the check behind every comment command."""

    def __init__(self, auth: GitHubAuth) -> None:
        self.auth = auth

    async def authorize(self, data: AuthorizeInput) -> AuthorizeOutput:
        return await asyncio.to_thread(self._authorize, data.request)

    async def resolve(self, command: GitHubCommand, *, run: bool) -> Resolution:
        """May the commenter run (and which commit) or cancel; reads the PR only for a run."""
        return await asyncio.to_thread(self._resolve, command, run)

    async def resolve_approver(self, command: GitHubCommand) -> Resolution:
        """May the commenter approve runs over budget: the maintain or admin role."""
        return await asyncio.to_thread(self._resolve_approver, command)

    def _resolve_approver(self, command: GitHubCommand) -> Resolution:
        with api_errors(self.auth):
            repo = self._repo(command.repo, command.installation_id)
            user = command.requested_by
            try:
                _headers, data = repo._requester.requestJsonAndCheck(
                    "GET", f"{repo.url}/collaborators/{quote(user, safe='')}/permission"
                )
            except UnknownObjectException:
                data = {}
        role = str((data or {}).get("role_name") or (data or {}).get("permission") or "none")
        if role in APPROVER_ROLES:
            return Resolution(allowed=True)
        reason = texts.NEEDS_MAINTAIN.format(
            user=user, repo=command.repo, what=texts.WHAT_APPROVE, role=role
        )
        return Resolution(allowed=False, reason=reason)

    def _repo(self, name: str, installation_id: int | None) -> Repository:
        return self.auth.client(name, installation_id).get_repo(name)

    def _denial(self, repo: Repository, name: str, user: str, what: str) -> str:
        """Why `user` may not act on `name`, or "" when they may."""
        try:
            permission = repo.get_collaborator_permission(user)
        except UnknownObjectException:
            permission = "none"
        if permission in ALLOWED_PERMISSIONS:
            return ""
        return texts.NEEDS_WRITE.format(user=user, repo=name, what=what, permission=permission)

    def _authorize(self, request: RunRequest) -> AuthorizeOutput:
        target = request.github
        assert target is not None
        with api_errors(self.auth):
            repo = self._repo(request.repo, target.installation_id)
            if request.trigger is Trigger.PULL_REQUEST and (
                not target.head_repo or target.head_repo.lower() != request.repo.lower()
            ):
                return AuthorizeOutput(allowed=False, reason=texts.FORK_PR)
            denial = self._denial(repo, request.repo, request.requested_by, texts.WHAT_RUN)
            if denial:
                return AuthorizeOutput(allowed=False, reason=denial)
            if request.commit or request.trigger is not Trigger.COMMENT or not target.pr_number:
                return AuthorizeOutput(allowed=True, commit=request.commit)
            # A comment run started without a commit: resolve it as the command workflow does.
            when = datetime.now(UTC)
            if target.comment_id:
                comment = repo.get_issue(target.pr_number).get_comment(target.comment_id)
                when = comment.created_at
            resolution = self._head_as_of(repo, request.repo, target.pr_number, when)
        return AuthorizeOutput(resolution.allowed, resolution.reason, resolution.commit)

    def _resolve(self, command: GitHubCommand, run: bool) -> Resolution:
        with api_errors(self.auth):
            repo = self._repo(command.repo, command.installation_id)
            what = texts.WHAT_RUN if run else texts.WHAT_CANCEL
            denial = self._denial(repo, command.repo, command.requested_by, what)
            if denial:
                return Resolution(allowed=False, reason=denial)
            if not run:
                return Resolution(allowed=True)
            when = parse_time(command.comment_created_at) or datetime.now(UTC)
            return self._head_as_of(repo, command.repo, command.pr_number, when)

    def _head_as_of(self, repo: Repository, name: str, number: int, when: datetime) -> Resolution:
        """The pull request's head as of `when`, or why it cannot be known for sure.

        The webhook carries no head sha, and the head may move between the comment and now. A
        fork's `pushed_at` is set by GitHub at every push to it: when it is older than the
        comment, nothing reached the fork since, so its current head is the commented one.
        Branches of the repository itself move only by people with write access: their head is
        run as it is now.
        """
        pull = repo.get_pull(number)
        if pull.state == "closed":
            return Resolution(allowed=False, reason=texts.PR_CLOSED.format(number=number))
        head = pull.head
        if head.repo is None:
            return Resolution(allowed=False, reason=texts.FORK_GONE)
        head_repo = head.repo.full_name
        fork = head_repo.lower() != name.lower()
        if fork:
            pushed = head.repo.pushed_at
            if pushed is None or pushed >= when:
                reason = texts.HEAD_UNCERTAIN.format(head_repo=head_repo, commit=head.sha[:7])
                return Resolution(allowed=False, reason=reason)
        return Resolution(
            allowed=True,
            commit=head.sha,
            ref=head.label if fork else head.ref,
            base_branch=pull.base.ref,
            head_repo=head_repo,
        )
