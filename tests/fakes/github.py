"""One fake GitHub for every test: the REST routes skyrun uses, git over HTTP, webhook deliveries.

A real HTTP server on 127.0.0.1 (a thread per connection). It is stateful (comments it stored can
be edited and read back), every object it returns carries its own URLs (so the real PyGithub
follows them back here), and it records every request for assertions. Repositories are real git
repositories served with `git http-backend`, so checkouts really clone, tokens included.

Tests build state with the helpers (`add_repo`, `commit`, `fork`, `open_pull`, `add_comment`),
build deliveries from it (`push_payload`, `comment_payload`, `pull_request_payload`,
`merge_group_payload`, `check_run_payload`, `check_suite_payload`) and send them signed with
`deliver`. Check runs keep GitHub's rules for their requested actions (`actions`: at most three,
label <= 20 characters, description <= 40, identifier <= 20).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.github.signature import HEADER, sign

BOT_LOGIN = "skyrun-bot"
"""The identity of FakeGitHub.token (a machine user's personal access token)."""
APP_BOT_LOGIN = "skyrun[bot]"
"""The identity of installation tokens."""
CLOCK_START = datetime(2024, 1, 1, tzinfo=UTC)
ROLE_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
}
"""What the REST `permission` field says for each role (GitHub folds maintain and triage)."""
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
DOCS_URL = "https://docs.github.com/rest"
RATE_LIMIT = 5000
"""Requests per hour GitHub grants a token (the fake counts them per token)."""
# GitHub's own words for refused credentials (401 bodies carry them as "message").
BAD_CREDENTIALS = "Bad credentials"
NO_AUTH = "Requires authentication"
JWT_UNDECODABLE = "A JSON web token could not be decoded"
JWT_ISS = "'Issuer' claim ('iss') must be an Integer"
JWT_EXP_PAST = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
    "which the assertion expires"
)
JWT_EXP_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
JWT_IAT_FUTURE = "'Issued at' claim ('iat') must be an Integer representing a time in the past"
JWT_MAX_LIFETIME = timedelta(minutes=10)
_JWT_CHECKS: Any = {"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False}
"""The signature and claims' presence by PyJWT; times by the fake, with GitHub's messages."""
SUSPENDED = "This installation has been suspended"
NOT_FOR_INTEGRATIONS = "Resource not accessible by integration"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fake",
    "GIT_AUTHOR_EMAIL": "fake@example.com",
    "GIT_COMMITTER_NAME": "Fake",
    "GIT_COMMITTER_EMAIL": "fake@example.com",
}

MAX_ACTIONS = 3
ACTION_LIMITS = {"label": 20, "description": 40, "identifier": 20}
"""GitHub's limits for a check run's requested actions (422 beyond them)."""
MERGE_QUEUE_PREFIX = "gh-readonly-queue"

Json = dict[str, Any]
_GIT_PATH = re.compile(r"/([^/]+)/([^/]+?)(?:\.git)?/(info/refs|git-upload-pack)")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class FakeRepo:
    full_name: str
    path: Path
    id: int
    default_branch: str = "main"
    private: bool = False
    fork_of: str | None = None
    pushed_at: str = ""
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.full_name.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/", 1)[1]


@dataclass
class FakePull:
    number: int
    repo: str
    head_repo: str
    head_ref: str
    base_ref: str
    user: str
    state: str = "open"
    created_at: str = ""


@dataclass
class FakeComment:
    id: int
    repo: str
    number: int
    user: str
    body: str
    created_at: str
    updated_at: str
    history: list[str] = field(default_factory=list)
    """Every body it had, oldest first (the current one last)."""
    reactions: list[tuple[str, str]] = field(default_factory=list)
    """(user, content) pairs."""


@dataclass
class FakeCheckRun:
    id: int
    repo: str
    head_sha: str
    data: Json
    history: list[Json] = field(default_factory=list)
    """Every state it had (the fields that were sent), oldest first."""
    creator: str = ""


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any) -> _Response:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **_GIT_ENV},
    )
    return result.stdout.strip()


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub:
    """A GitHub on 127.0.0.1; use as a context manager (or `start` / `close`)."""

    def __init__(self, root: Path, token: str = "ghp_fake_token") -> None:
        self.root = root
        self.token = token
        self.requests: list[Recorded] = []
        self.outage = False
        """True: every REST call answers 503 (git keeps serving)."""
        self.repos: dict[str, FakeRepo] = {}
        self.users: dict[str, str] = {BOT_LOGIN: "User", APP_BOT_LOGIN: "Bot"}
        self.pulls: dict[tuple[str, int], FakePull] = {}
        self.comments: dict[int, FakeComment] = {}
        self.check_runs: dict[int, FakeCheckRun] = {}
        self.app_id: str | None = None
        self.app_slug = "skyrun"
        self.app_public_key: str = ""
        self.installations: dict[int, set[str]] = {}
        self.installation_accounts: dict[int, str] = {}
        self.suspended: set[int] = set()
        """Installations GitHub suspended: minting a token for one answers 403."""
        self.token_ttl = timedelta(hours=1)
        self.minted: list[str] = []
        self._tokens: dict[str, tuple[str, datetime | None]] = {token: (BOT_LOGIN, None)}
        self._clock = CLOCK_START
        self._ids = itertools.count(1000)
        self._numbers: dict[str, itertools.count[int]] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._routes = self._route_table()

    # Serving

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(_Handler):
            github = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api(self, path: str) -> str:
        return f"{self.url}{path}"

    # State helpers for tests

    def now(self) -> str:
        """The fake's clock: one second later at every call, so events have a strict order."""
        with self._lock:
            self._clock += timedelta(seconds=1)
            return _stamp(self._clock)

    def add_user(self, login: str, type: str = "User") -> str:
        self.users[login] = type
        return login

    def add_repo(
        self,
        full_name: str,
        files: Mapping[str, str | None],
        *,
        private: bool = False,
        default_branch: str = "main",
        roles: dict[str, str] | None = None,
    ) -> FakeRepo:
        path = self.root / "repos" / full_name
        path.mkdir(parents=True)
        _git("init", "-q", "-b", default_branch, str(path))
        repo = FakeRepo(full_name, path, next(self._ids), default_branch, private)
        repo.roles = {repo.owner: "admin", **(roles or {})}
        for login in repo.roles:
            self.users.setdefault(login, "User")
        self.repos[full_name] = repo
        self.commit(full_name, files, message="initial")
        return repo

    def fork(self, full_name: str, owner: str) -> FakeRepo:
        base = self.repos[full_name]
        fork_name = f"{owner}/{base.name}"
        path = self.root / "repos" / fork_name
        _git("clone", "-q", str(base.path), str(path))
        repo = FakeRepo(fork_name, path, next(self._ids), base.default_branch, base.private)
        repo.fork_of, repo.roles, repo.pushed_at = full_name, {owner: "admin"}, self.now()
        self.users.setdefault(owner, "User")
        self.repos[fork_name] = repo
        return repo

    def grant(self, full_name: str, login: str, role: str) -> None:
        self.users.setdefault(login, "User")
        self.repos[full_name].roles[login] = role

    def commit(
        self,
        full_name: str,
        files: Mapping[str, str | None],
        *,
        branch: str | None = None,
        message: str = "change",
    ) -> str:
        """Commit `files` (None deletes) on `branch` as a push would; returns the new sha."""
        repo = self.repos[full_name]
        branch = branch or repo.default_branch
        exists = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=repo.path,
            capture_output=True,
        )
        has_commits = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=repo.path, capture_output=True
        )
        if exists.returncode == 0:
            _git("checkout", "-q", branch, cwd=repo.path)
        elif has_commits.returncode == 0:
            _git("checkout", "-q", "-b", branch, repo.default_branch, cwd=repo.path)
        for rel, text in files.items():
            target = repo.path / rel
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        _git("add", "-A", cwd=repo.path)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=repo.path)
        sha = _git("rev-parse", "HEAD", cwd=repo.path)
        if branch != repo.default_branch:
            _git("checkout", "-q", repo.default_branch, cwd=repo.path)
        repo.pushed_at = self.now()
        self._sync_pulls()
        return sha

    def head(self, full_name: str, branch: str | None = None) -> str:
        repo = self.repos[full_name]
        return _git("rev-parse", f"refs/heads/{branch or repo.default_branch}", cwd=repo.path)

    def open_pull(
        self,
        full_name: str,
        head_ref: str,
        *,
        user: str,
        head_repo: str | None = None,
        base_ref: str | None = None,
    ) -> FakePull:
        repo = self.repos[full_name]
        pull = FakePull(
            number=self._next_number(full_name),
            repo=full_name,
            head_repo=head_repo or full_name,
            head_ref=head_ref,
            base_ref=base_ref or repo.default_branch,
            user=user,
            created_at=self.now(),
        )
        self.users.setdefault(user, "User")
        self.pulls[(full_name, pull.number)] = pull
        self._sync_pulls()
        return pull

    def close_pull(self, pull: FakePull) -> None:
        pull.state = "closed"

    def force_push(self, full_name: str, branch: str, sha: str) -> None:
        """Point `branch` at `sha` as `git push --force` would (commits after it leave it)."""
        repo = self.repos[full_name]
        _git("update-ref", f"refs/heads/{branch}", sha, cwd=repo.path)
        repo.pushed_at = self.now()
        self._sync_pulls()

    def add_comment(self, full_name: str, number: int, user: str, body: str) -> FakeComment:
        """A comment someone wrote in the web UI (skyrun's own go through the API)."""
        self.users.setdefault(user, "User")
        with self._lock:
            return self._store_comment(full_name, number, user, body)

    def add_check_run(
        self, full_name: str, sha: str, *, name: str = "skyrun", external_id: str | None = None
    ) -> FakeCheckRun:
        """A check run some App created on `sha` (skyrun's own go through the API)."""
        with self._lock:
            run = FakeCheckRun(next(self._ids), full_name, sha, {}, [], APP_BOT_LOGIN)
            run.data = {
                "name": name,
                "status": "completed",
                "conclusion": "success",
                "external_id": external_id,
                "output": {"title": name, "summary": "done"},
                "actions": [],
            }
            self.check_runs[run.id] = run
            return run

    def enable_app(self, app_id: str, slug: str = "skyrun") -> str:
        """Register a GitHub App; returns its private key (PEM), as GitHub lets you download it.

        Requests as the App must carry a JWT signed with that key (RS256, `iss` the App id, at
        most ten minutes between `iat` and `exp`), as GitHub checks them.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.app_id, self.app_slug = app_id, slug
        self.app_public_key = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def install(self, installation_id: int, *repos: str, account: str | None = None) -> None:
        """Install the App on `repos` (all of one account: the first repository's owner)."""
        self.installations.setdefault(installation_id, set()).update(repos)
        owner = account or (repos[0].split("/", 1)[0] if repos else "acme")
        self.installation_accounts.setdefault(installation_id, owner)
        self.users.setdefault(owner, "Organization")

    def installation_for(self, full_name: str) -> int | None:
        return next((i for i, repos in self.installations.items() if full_name in repos), None)

    # Assertions

    def calls(
        self, method: str | None = None, path: str = "", *, git: bool = False
    ) -> list[Recorded]:
        """Recorded API requests (or git's, with `git`) with this method whose path matches."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and re.search(path, r.path)
            and bool(_GIT_PATH.fullmatch(r.path)) == git
        ]

    def comments_on(self, full_name: str, number: int) -> list[FakeComment]:
        return [c for c in self.comments.values() if c.repo == full_name and c.number == number]

    def bot_comments(self, full_name: str, number: int) -> list[FakeComment]:
        return [
            c for c in self.comments_on(full_name, number) if c.user in (BOT_LOGIN, APP_BOT_LOGIN)
        ]

    def check_runs_for(self, full_name: str, sha: str) -> list[FakeCheckRun]:
        return [c for c in self.check_runs.values() if c.repo == full_name and c.head_sha == sha]

    def reactions(self, comment: FakeComment) -> list[str]:
        return [content for _, content in self.comments[comment.id].reactions]

    # Webhook payloads, shaped like GitHub's (the fields skyrun reads, and a few more)

    def push_payload(
        self,
        full_name: str,
        ref: str,
        after: str,
        *,
        sender: str,
        before: str = "0" * 40,
        deleted: bool = False,
    ) -> Json:
        repo = self.repos[full_name]
        return self._with_installation(
            repo,
            {
                "ref": ref,
                "before": before,
                "after": after,
                "created": before == "0" * 40,
                "deleted": deleted,
                "forced": False,
                "compare": f"{self._html(repo.full_name)}/compare/{before[:12]}...{after[:12]}",
                "commits": [],
                "head_commit": None if deleted else {"id": after, "message": "change"},
                "repository": self._repo_json(repo),
                "pusher": {"name": sender, "email": f"{sender}@example.com"},
                "sender": self._user_json(sender),
            },
        )

    def comment_payload(self, comment: FakeComment, action: str = "created") -> Json:
        repo = self.repos[comment.repo]
        pull = self.pulls.get((comment.repo, comment.number))
        issue: Json = {
            "number": comment.number,
            "title": "a pull request",
            "user": self._user_json(pull.user if pull else comment.user),
            "state": pull.state if pull else "open",
            "url": self.api(f"/repos/{comment.repo}/issues/{comment.number}"),
        }
        if pull is not None:
            issue["pull_request"] = {
                "url": self.api(f"/repos/{comment.repo}/pulls/{comment.number}"),
                "html_url": f"{self._html(comment.repo)}/pull/{comment.number}",
            }
        return self._with_installation(
            repo,
            {
                "action": action,
                "issue": issue,
                "comment": self._comment_json(comment),
                "repository": self._repo_json(repo),
                "sender": self._user_json(comment.user),
            },
        )

    def pull_request_payload(self, pull: FakePull, action: str, sender: str | None = None) -> Json:
        repo = self.repos[pull.repo]
        return self._with_installation(
            repo,
            {
                "action": action,
                "number": pull.number,
                "pull_request": self._pull_json(pull),
                "repository": self._repo_json(repo),
                "sender": self._user_json(sender or pull.user),
            },
        )

    def merge_group(self, full_name: str, pull: FakePull, files: Mapping[str, str | None]) -> str:
        """Queue `pull`: GitHub commits the group on a `gh-readonly-queue/...` branch; its ref."""
        base = self.head(full_name, pull.base_ref)
        branch = f"{MERGE_QUEUE_PREFIX}/{pull.base_ref}/pr-{pull.number}-{base}"
        repo = self.repos[full_name]
        _git("branch", "-f", branch, base, cwd=repo.path)
        self.commit(full_name, files, branch=branch, message=f"Merge pull request #{pull.number}")
        return branch

    def merge_group_payload(
        self,
        full_name: str,
        head_ref: str,
        action: str = "checks_requested",
        *,
        sender: str,
        reason: str | None = None,
    ) -> Json:
        """GitHub's `merge_group` delivery for the group on branch `head_ref`."""
        repo = self.repos[full_name]
        base_ref = head_ref.split("/")[1]
        head_sha = self.head(full_name, head_ref)
        payload: Json = {
            "action": action,
            "merge_group": {
                "head_sha": head_sha,
                "head_ref": f"refs/heads/{head_ref}",
                "base_sha": self.head(full_name, base_ref),
                "base_ref": f"refs/heads/{base_ref}",
                "head_commit": {"id": head_sha, "message": "Merge pull request"},
            },
            "repository": self._repo_json(repo),
            "sender": self._user_json(sender),
        }
        if reason is not None:
            payload["reason"] = reason
        return self._with_installation(repo, payload)

    def check_run_payload(
        self,
        check: FakeCheckRun,
        action: str,
        *,
        sender: str,
        identifier: str | None = None,
    ) -> Json:
        """`check_run` as GitHub sends it: `requested_action` (a button, by `identifier`) or
        `rerequested` (GitHub's own Re-run)."""
        repo = self.repos[check.repo]
        self.users.setdefault(sender, "User")
        payload: Json = {
            "action": action,
            "check_run": self._check_run_json(check),
            "repository": self._repo_json(repo),
            "sender": self._user_json(sender),
        }
        if identifier is not None:
            payload["requested_action"] = {"identifier": identifier}
        return self._with_installation(repo, payload)

    def check_suite_payload(self, full_name: str, sha: str, *, sender: str) -> Json:
        """`check_suite` `rerequested`: GitHub's "Re-run all checks" on commit `sha`."""
        repo = self.repos[full_name]
        self.users.setdefault(sender, "User")
        return self._with_installation(
            repo,
            {
                "action": "rerequested",
                "check_suite": self._check_suite_json(full_name, sha),
                "repository": self._repo_json(repo),
                "sender": self._user_json(sender),
            },
        )

    # Internals: state

    def _next_number(self, full_name: str) -> int:
        return next(self._numbers.setdefault(full_name, itertools.count(1)))

    def _sync_pulls(self) -> None:
        """Keep refs/pull/N/head in the base repository, so fork commits can be fetched there."""
        for pull in self.pulls.values():
            head = self.repos[pull.head_repo]
            base = self.repos[pull.repo]
            _git(
                "fetch",
                "-q",
                str(head.path),
                f"+refs/heads/{pull.head_ref}:refs/pull/{pull.number}/head",
                cwd=base.path,
            )

    def _store_comment(self, full_name: str, number: int, user: str, body: str) -> FakeComment:
        now = self.now()
        comment = FakeComment(next(self._ids), full_name, number, user, body, now, now, [body])
        self.comments[comment.id] = comment
        return comment

    def _with_installation(self, repo: FakeRepo, payload: Json) -> Json:
        installation = self.installation_for(repo.full_name)
        if installation is not None:
            payload["installation"] = {"id": installation}
        return payload

    # Internals: JSON views (with the fake's own URLs)

    def _html(self, path: str) -> str:
        return f"{self.url}/{path}"

    def _user_json(self, login: str) -> Json:
        return {
            "login": login,
            "id": abs(hash(login)) % 10_000_000,
            "type": self.users.get(login, "User"),
            "url": self.api(f"/users/{login}"),
            "html_url": self._html(login),
        }

    def _repo_json(self, repo: FakeRepo) -> Json:
        return {
            "id": repo.id,
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "fork": repo.fork_of is not None,
            "owner": self._user_json(repo.owner),
            "url": self.api(f"/repos/{repo.full_name}"),
            "html_url": self._html(repo.full_name),
            "clone_url": f"{self.url}/{repo.full_name}.git",
            "default_branch": repo.default_branch,
            "pushed_at": repo.pushed_at,
        }

    def _pull_json(self, pull: FakePull) -> Json:
        head, base = self.repos[pull.head_repo], self.repos[pull.repo]
        return {
            "url": self.api(f"/repos/{pull.repo}/pulls/{pull.number}"),
            "id": pull.number * 7919,
            "number": pull.number,
            "state": pull.state,
            "title": "a pull request",
            "html_url": f"{self._html(pull.repo)}/pull/{pull.number}",
            "issue_url": self.api(f"/repos/{pull.repo}/issues/{pull.number}"),
            "user": self._user_json(pull.user),
            "created_at": pull.created_at,
            "head": {
                "label": f"{head.owner}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": self.head(head.full_name, pull.head_ref),
                "repo": self._repo_json(head),
                "user": self._user_json(head.owner),
            },
            "base": {
                "label": f"{base.owner}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": self.head(base.full_name, pull.base_ref),
                "repo": self._repo_json(base),
                "user": self._user_json(base.owner),
            },
        }

    def _comment_json(self, comment: FakeComment) -> Json:
        return {
            "id": comment.id,
            "node_id": f"IC_{comment.id}",
            "url": self.api(f"/repos/{comment.repo}/issues/comments/{comment.id}"),
            "html_url": (
                f"{self._html(comment.repo)}/pull/{comment.number}#issuecomment-{comment.id}"
            ),
            "issue_url": self.api(f"/repos/{comment.repo}/issues/{comment.number}"),
            "body": comment.body,
            "user": self._user_json(comment.user),
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
        }

    def _check_run_json(self, run: FakeCheckRun) -> Json:
        return {
            "id": run.id,
            "head_sha": run.head_sha,
            "url": self.api(f"/repos/{run.repo}/check-runs/{run.id}"),
            "html_url": f"{self._html(run.repo)}/runs/{run.id}",
            "app": {"id": 1, "slug": self.app_slug, "name": self.app_slug},
            "check_suite": {"id": self._suite_id(run.repo, run.head_sha)},
            "pull_requests": self._pulls_at(run.repo, run.head_sha),
            **run.data,
        }

    def _suite_id(self, full_name: str, sha: str) -> int:
        return int(sha[:7], 16) + self.repos[full_name].id

    def _pulls_at(self, full_name: str, sha: str) -> list[Json]:
        """The open pull requests of the repository whose head is `sha`, as GitHub lists them."""
        out = []
        for pull in self.pulls.values():
            if pull.repo != full_name or pull.state != "open" or pull.head_repo != full_name:
                continue
            if self.head(full_name, pull.head_ref) == sha:
                out.append(
                    {
                        "id": pull.number,
                        "number": pull.number,
                        "url": self.api(f"/repos/{full_name}/pulls/{pull.number}"),
                        "head": {"ref": pull.head_ref, "sha": sha},
                        "base": {"ref": pull.base_ref},
                    }
                )
        return out

    def _check_suite_json(self, full_name: str, sha: str) -> Json:
        return {
            "id": self._suite_id(full_name, sha),
            "head_sha": sha,
            "head_branch": None,
            "status": "completed",
            "app": {"id": 1, "slug": self.app_slug, "name": self.app_slug},
            "pull_requests": self._pulls_at(full_name, sha),
        }

    # Internals: HTTP

    def handle(self, request: _Request) -> _Response:
        recorded = Recorded(
            request.method, request.path, request.query, _json_or_none(request), request.headers
        )
        with self._lock:
            self.requests.append(recorded)
        git = _GIT_PATH.fullmatch(request.path)
        if git:
            return self._git_http(request, f"{git[1]}/{git[2]}", git[3])
        if self.outage:
            return _Response.json(503, {"message": "Service Unavailable (fake outage)"})
        for method, pattern, handler in self._routes:
            match = re.fullmatch(pattern, request.path)
            if match and method == request.method:
                try:
                    with self._lock:
                        status, data = handler(request, **match.groupdict())
                except _Error as err:
                    return _Response.json(
                        err.status,
                        {
                            "message": err.message,
                            "documentation_url": DOCS_URL,
                            "status": str(err.status),
                        },
                    )
                return _Response.json(status, data)
        return _Response.json(
            404, {"message": "Not Found", "documentation_url": DOCS_URL, "status": "404"}
        )

    def _route_table(self) -> list[tuple[str, str, Callable[..., tuple[int, Any]]]]:
        repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        return [
            ("GET", r"/app", self._get_app),
            ("GET", r"/app/installations", self._list_installations),
            ("GET", r"/app/installations/(?P<installation>\d+)", self._get_installation),
            ("POST", r"/app/installations/(?P<installation>\d+)/access_tokens", self._mint),
            ("GET", r"/rate_limit", self._rate_limit),
            ("GET", r"/user", self._get_user),
            ("GET", rf"{repo}/installation", self._repo_installation),
            ("GET", rf"{repo}", self._get_repo),
            ("GET", rf"{repo}/collaborators/(?P<login>[^/]+)/permission", self._permission),
            ("GET", rf"{repo}/pulls/(?P<number>\d+)", self._get_pull),
            ("GET", rf"{repo}/pulls/(?P<number>\d+)/commits", self._list_pull_commits),
            ("GET", rf"{repo}/pulls", self._list_pulls),
            ("GET", rf"{repo}/issues/(?P<number>\d+)/comments", self._list_comments),
            ("POST", rf"{repo}/issues/(?P<number>\d+)/comments", self._create_comment),
            ("GET", rf"{repo}/issues/comments/(?P<id>\d+)", self._get_comment),
            ("PATCH", rf"{repo}/issues/comments/(?P<id>\d+)", self._edit_comment),
            ("POST", rf"{repo}/issues/comments/(?P<id>\d+)/reactions", self._react),
            ("POST", rf"{repo}/check-runs", self._create_check_run),
            ("GET", rf"{repo}/check-runs/(?P<id>\d+)", self._get_check_run),
            ("PATCH", rf"{repo}/check-runs/(?P<id>\d+)", self._edit_check_run),
            ("GET", rf"{repo}/commits/(?P<sha>[^/]+)/check-runs", self._list_check_runs),
        ]

    def _caller(self, request: _Request) -> str:
        """The login a token belongs to; 401 for anything else."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer"):
            raise _Error(401, NO_AUTH)
        entry = self._tokens.get(credential)
        if entry is None or (entry[1] is not None and entry[1] < datetime.now(UTC)):
            raise _Error(401, BAD_CREDENTIALS)
        return entry[0]

    def _app(self, request: _Request) -> None:
        """A GitHub App's JWT, checked as GitHub does: RS256 with the App's key, iss, iat, exp."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if self.app_id is None or scheme.lower() != "bearer":
            raise _Error(401, JWT_UNDECODABLE)
        try:
            unverified = jwt.decode(credential, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Error(401, JWT_UNDECODABLE) from None
        if not str(unverified.get("iss", "")).isdigit():
            raise _Error(401, JWT_ISS)
        try:
            # GitHub finds the App by `iss`: another App's id cannot be decoded with this key.
            if str(unverified["iss"]) != self.app_id:
                raise jwt.InvalidSignatureError
            claims = jwt.decode(
                credential,
                self.app_public_key,
                algorithms=["RS256"],
                options=_JWT_CHECKS,
            )
        except jwt.PyJWTError:
            raise _Error(401, JWT_UNDECODABLE) from None
        now = datetime.now(UTC).timestamp()
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or iat > now + 1:
            raise _Error(401, JWT_IAT_FUTURE)
        if not isinstance(exp, int | float) or exp <= now:
            raise _Error(401, JWT_EXP_PAST)
        if exp - iat > JWT_MAX_LIFETIME.total_seconds():
            raise _Error(401, JWT_EXP_TOO_FAR)

    def _app_json(self) -> Json:
        assert self.app_id is not None
        return {
            "id": int(self.app_id),
            "slug": self.app_slug,
            "node_id": f"A_{self.app_id}",
            "name": self.app_slug,
            "owner": self._user_json(BOT_LOGIN),
            "description": "",
            "external_url": self.url,
            "html_url": self._html(f"apps/{self.app_slug}"),
            "created_at": _stamp(CLOCK_START),
            "updated_at": _stamp(CLOCK_START),
            "permissions": {"checks": "write", "contents": "read", "pull_requests": "write"},
            "events": ["push", "issue_comment", "pull_request"],
            "installations_count": len(self.installations),
        }

    def _installation_json(self, installation: int) -> Json:
        account = self.installation_accounts.get(installation, "acme")
        return {
            "id": installation,
            "account": self._user_json(account),
            "target_type": self.users.get(account, "Organization"),
            "repository_selection": "selected",
            "access_tokens_url": self.api(f"/app/installations/{installation}/access_tokens"),
            "repositories_url": self.api("/installation/repositories"),
            "html_url": self._html(f"settings/installations/{installation}"),
            "app_id": int(self.app_id or 0),
            "app_slug": self.app_slug,
            "target_id": abs(hash(account)) % 10_000_000,
            "permissions": {"checks": "write", "contents": "read"},
            "events": ["push"],
            "created_at": _stamp(CLOCK_START),
            "updated_at": _stamp(CLOCK_START),
            "suspended_at": _stamp(CLOCK_START) if installation in self.suspended else None,
        }

    def _get_app(self, request: _Request) -> tuple[int, Any]:
        self._app(request)
        return 200, self._app_json()

    def _list_installations(self, request: _Request) -> tuple[int, Any]:
        self._app(request)
        return 200, [self._installation_json(i) for i in sorted(self.installations)]

    def _get_installation(self, request: _Request, installation: str) -> tuple[int, Any]:
        self._app(request)
        if int(installation) not in self.installations:
            raise _Error(404, "Not Found")
        return 200, self._installation_json(int(installation))

    def _rate_limit(self, request: _Request) -> tuple[int, Any]:
        self._caller(request)
        credential = request.headers.get("authorization", "").partition(" ")[2]
        used = sum(
            1
            for r in self.requests
            if r.headers.get("authorization", "").partition(" ")[2] == credential
            and not _GIT_PATH.fullmatch(r.path)
            and r.path != "/rate_limit"
        )
        reset = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
        core = {"limit": RATE_LIMIT, "used": used, "remaining": RATE_LIMIT - used, "reset": reset}
        return 200, {"resources": {"core": core}, "rate": core}

    def _get_user(self, request: _Request) -> tuple[int, Any]:
        login = self._caller(request)
        if login == APP_BOT_LOGIN:
            raise _Error(403, NOT_FOR_INTEGRATIONS)
        return 200, self._user_json(login)

    def _repo(self, owner: str, name: str) -> FakeRepo:
        repo = self.repos.get(f"{owner}/{name}")
        if repo is None:
            raise _Error(404, "Not Found")
        return repo

    def _mint(self, request: _Request, installation: str) -> tuple[int, Any]:
        self._app(request)
        if int(installation) not in self.installations:
            raise _Error(404, "Not Found")
        if int(installation) in self.suspended:
            raise _Error(403, SUSPENDED)
        token = f"ghs_{uuid.uuid4().hex}"
        expires = datetime.now(UTC) + self.token_ttl
        self._tokens[token] = (APP_BOT_LOGIN, expires)
        self.minted.append(token)
        return 201, {"token": token, "expires_at": _stamp(expires), "permissions": {}}

    def _repo_installation(self, request: _Request, owner: str, name: str) -> tuple[int, Any]:
        self._app(request)
        installation = self.installation_for(self._repo(owner, name).full_name)
        if installation is None:
            raise _Error(404, "Not Found")
        return 200, {"id": installation, "app_id": self.app_id, "account": self._user_json(owner)}

    def _get_repo(self, request: _Request, owner: str, name: str) -> tuple[int, Any]:
        self._caller(request)
        return 200, self._repo_json(self._repo(owner, name))

    def _permission(self, request: _Request, owner: str, name: str, login: str) -> tuple[int, Any]:
        self._caller(request)
        repo = self._repo(owner, name)
        if login not in self.users:
            raise _Error(404, f"{login} is not a user")
        role = repo.roles.get(login, "none" if repo.private else "read")
        permission = ROLE_PERMISSION.get(role, "none")
        return 200, {"permission": permission, "role_name": role, "user": self._user_json(login)}

    def _pull(self, owner: str, name: str, number: str) -> FakePull:
        pull = self.pulls.get((self._repo(owner, name).full_name, int(number)))
        if pull is None:
            raise _Error(404, "Not Found")
        return pull

    def _get_pull(self, request: _Request, owner: str, name: str, number: str) -> tuple[int, Any]:
        self._caller(request)
        return 200, self._pull_json(self._pull(owner, name, number))

    def _list_pull_commits(
        self, request: _Request, owner: str, name: str, number: str
    ) -> tuple[int, Any]:
        """The pull request's commits (its head's, not its base's), oldest first."""
        self._caller(request)
        pull = self._pull(owner, name, number)
        base = self.repos[pull.repo]
        shas = _git(
            "rev-list",
            "--reverse",
            f"refs/pull/{pull.number}/head",
            f"^refs/heads/{pull.base_ref}",
            cwd=base.path,
        ).split()
        url = self.api(f"/repos/{pull.repo}/commits")
        return 200, [{"sha": sha, "url": f"{url}/{sha}", "commit": {}} for sha in shas]

    def _list_pulls(self, request: _Request, owner: str, name: str) -> tuple[int, Any]:
        self._caller(request)
        full_name = self._repo(owner, name).full_name
        state = request.query.get("state", "open")
        head = request.query.get("head", "")
        pulls = [
            p
            for p in self.pulls.values()
            if p.repo == full_name
            and (state == "all" or p.state == state)
            and (not head or head == f"{self.repos[p.head_repo].owner}:{p.head_ref}")
        ]
        return 200, [self._pull_json(p) for p in pulls]

    def _list_comments(
        self, request: _Request, owner: str, name: str, number: str
    ) -> tuple[int, Any]:
        self._caller(request)
        full_name = self._repo(owner, name).full_name
        return 200, [self._comment_json(c) for c in self.comments_on(full_name, int(number))]

    def _create_comment(
        self, request: _Request, owner: str, name: str, number: str
    ) -> tuple[int, Any]:
        caller = self._caller(request)
        full_name = self._repo(owner, name).full_name
        if (full_name, int(number)) not in self.pulls:
            raise _Error(404, "Not Found")
        body = _body(request).get("body")
        if not isinstance(body, str) or not body:
            raise _Error(422, "body is missing")
        if len(body) > 65536:
            raise _Error(422, "Body is too long (maximum is 65536 characters)")
        return 201, self._comment_json(self._store_comment(full_name, int(number), caller, body))

    def _comment(self, owner: str, name: str, id: str) -> FakeComment:
        comment = self.comments.get(int(id))
        if comment is None or comment.repo != self._repo(owner, name).full_name:
            raise _Error(404, "Not Found")
        return comment

    def _get_comment(self, request: _Request, owner: str, name: str, id: str) -> tuple[int, Any]:
        self._caller(request)
        return 200, self._comment_json(self._comment(owner, name, id))

    def _edit_comment(self, request: _Request, owner: str, name: str, id: str) -> tuple[int, Any]:
        caller = self._caller(request)
        comment = self._comment(owner, name, id)
        if comment.user != caller:
            raise _Error(403, "You cannot edit someone else's comment")
        body = _body(request).get("body")
        if not isinstance(body, str) or not body:
            raise _Error(422, "body is missing")
        if len(body) > 65536:
            raise _Error(422, "Body is too long (maximum is 65536 characters)")
        comment.body, comment.updated_at = body, self.now()
        comment.history.append(body)
        return 200, self._comment_json(comment)

    def _react(self, request: _Request, owner: str, name: str, id: str) -> tuple[int, Any]:
        caller = self._caller(request)
        comment = self._comment(owner, name, id)
        content = _body(request).get("content")
        if content not in ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"):
            raise _Error(422, "content is not a valid reaction")
        reaction = {"id": next(self._ids), "content": content, "user": self._user_json(caller)}
        if (caller, content) in comment.reactions:
            return 200, reaction
        comment.reactions.append((caller, content))
        return 201, reaction

    def _create_check_run(self, request: _Request, owner: str, name: str) -> tuple[int, Any]:
        caller = self._caller(request)
        full_name = self._repo(owner, name).full_name
        data = _body(request)
        if not data.get("name") or not data.get("head_sha"):
            raise _Error(422, "name and head_sha are required")
        _check_output(data)
        run = FakeCheckRun(next(self._ids), full_name, data["head_sha"], {}, [], caller)
        run.data = {
            "name": data["name"],
            "status": data.get("status", "queued"),
            "conclusion": data.get("conclusion"),
            "details_url": data.get("details_url"),
            "external_id": data.get("external_id"),
            "started_at": data.get("started_at") or self.now(),
            "completed_at": data.get("completed_at"),
            "output": data.get("output") or {},
            "actions": data.get("actions") or [],
        }
        run.history.append(data)
        self.check_runs[run.id] = run
        return 201, self._check_run_json(run)

    def _check_run(self, owner: str, name: str, id: str) -> FakeCheckRun:
        run = self.check_runs.get(int(id))
        if run is None or run.repo != self._repo(owner, name).full_name:
            raise _Error(404, "Not Found")
        return run

    def _get_check_run(self, request: _Request, owner: str, name: str, id: str) -> tuple[int, Any]:
        self._caller(request)
        return 200, self._check_run_json(self._check_run(owner, name, id))

    def _edit_check_run(self, request: _Request, owner: str, name: str, id: str) -> tuple[int, Any]:
        self._caller(request)
        run = self._check_run(owner, name, id)
        data = _body(request)
        _check_output(data)
        if data.get("conclusion") and data.get("status", "completed") != "completed":
            raise _Error(422, "a conclusion needs status completed")
        run.data.update({k: v for k, v in data.items() if k != "head_sha"})
        if data.get("conclusion"):
            run.data["status"] = "completed"
        run.history.append(data)
        return 200, self._check_run_json(run)

    def _list_check_runs(
        self, request: _Request, owner: str, name: str, sha: str
    ) -> tuple[int, Any]:
        self._caller(request)
        runs = [
            self._check_run_json(r)
            for r in self.check_runs_for(self._repo(owner, name).full_name, sha)
            if not request.query.get("check_name") or r.data["name"] == request.query["check_name"]
        ]
        return 200, {"total_count": len(runs), "check_runs": runs}

    def _git_http(self, request: _Request, full_name: str, service: str) -> _Response:
        repo = self.repos.get(full_name)
        if repo is None:
            return _Response(404, b"Repository not found\n")
        if repo.private and not self._git_authorized(request):
            return _Response(
                401, b"Authentication required\n", {"WWW-Authenticate": 'Basic realm="GitHub"'}
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_PROJECT_ROOT": str(self.root / "repos"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{full_name}/{service}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": "&".join(f"{k}={v}" for k, v in request.query.items()),
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(request.body)),
            "REMOTE_ADDR": "127.0.0.1",
            # Like GitHub: a commit reachable from any ref (refs/pull/N/head too) can be fetched.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "uploadpack.allowAnySHA1InWant",
            "GIT_CONFIG_VALUE_0": "true",
        }
        for header in ("git-protocol", "content-encoding"):
            if header in request.headers:
                env["HTTP_" + header.upper().replace("-", "_")] = request.headers[header]
        proc = subprocess.run(
            ["git", "http-backend"], input=request.body, capture_output=True, env=env, check=False
        )
        head, _, body = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, body = proc.stdout.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        return _Response(status, body, headers)

    def _git_authorized(self, request: _Request) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        _, _, password = base64.b64decode(credential).decode().partition(":")
        entry = self._tokens.get(password)
        return entry is not None and (entry[1] is None or entry[1] > datetime.now(UTC))


def _json_or_none(request: _Request) -> Any:
    if not request.body or "json" not in request.headers.get("content-type", ""):
        return None
    try:
        return json.loads(request.body)
    except ValueError:
        return None


def _body(request: _Request) -> Json:
    data = _json_or_none(request)
    if not isinstance(data, dict):
        raise _Error(400, "Problems parsing JSON")
    return data


def _check_output(data: Json) -> None:
    output = data.get("output") or {}
    for key in ("summary", "text"):
        if len(output.get(key) or "") > 65535:
            raise _Error(422, f"output.{key} is too long (maximum is 65535 characters)")
    actions = data.get("actions") or []
    if len(actions) > MAX_ACTIONS:
        raise _Error(422, f"actions: at most {MAX_ACTIONS} are allowed")
    for action in actions:
        for key, limit in ACTION_LIMITS.items():
            value = action.get(key)
            if not isinstance(value, str) or not value or len(value) > limit:
                raise _Error(422, f"actions.{key} is required, at most {limit} characters")


class _Handler(BaseHTTPRequestHandler):
    github: FakeGitHub
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.github.handle(
            _Request(self.command, parts.path, query, headers, self._read_body(headers))
        )
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(headers.get("content-length", "0") or 0))

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def deliver(
    http: httpx.AsyncClient,
    event: str,
    payload: Json,
    *,
    secret: str,
    delivery: str | None = None,
    path: str = "/github/webhook",
) -> httpx.Response:
    """Send a delivery the way GitHub does: JSON body, signed, with event and delivery headers."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        HEADER: sign(secret, body),
        "User-Agent": "GitHub-Hookshot/fake",
    }
    return await http.post(path, content=body, headers=headers)


@contextlib.contextmanager
def running(root: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(root) as fake:
        yield fake


def unknown_app_key() -> str:
    """A well-formed RSA private key (PEM) that no App of the fake knows: the wrong .pem file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
