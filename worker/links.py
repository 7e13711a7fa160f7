"""The URLs skyrun posts and uses: run pages, logs, the Temporal UI and GitHub's hosts (plain)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from worker.contract import StageProgress
from worker.settings import Settings


class Links:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.public_url
        self.temporal_ui = settings.temporal_ui_url
        self.namespace = settings.temporal_namespace

    def run(self, run_id: str) -> str:
        return f"{self.base}/runs/{quote(run_id)}"

    def log(self, run_id: str, stage: str) -> str:
        return f"{self.base}/runs/{quote(run_id)}/logs/{quote(stage)}"

    def stage_log(self, run_id: str, stage: StageProgress) -> str:
        """A stage's log: a stage a retry reused has its log in the run it came from."""
        return self.log(stage.reused_from or run_id, stage.name)

    def api(self, run_id: str) -> str:
        return f"{self.base}/api/runs/{quote(run_id)}"

    def temporal(self, run_id: str) -> str:
        return f"{self.temporal_ui}/namespaces/{quote(self.namespace)}/workflows/{quote(run_id)}"


# GitHub hosts: the one mapping from GITHUB_API_URL to where GitHub serves web pages and git.

GITHUB_API = "https://api.github.com"
GITHUB_WEB = "https://github.com"
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}")
"""`OWNER/REPO` as GitHub allows them (`_` for managed users' `name_shortcode`; a repository is
never named `.` or `..`): never a path, a query or an option."""
_GHE_COM = re.compile(r"api\.([a-z0-9-]+)\.ghe\.com")
E_API_URL = "GITHUB_API_URL {url!r} is not an http(s) URL with a host"
E_REPO = "{repo} is not a repository name (expected OWNER/REPO)"


@dataclass(frozen=True)
class GitHubHost:
    """Where one GitHub serves its API, its web pages and git, derived from GITHUB_API_URL only.

    github.com (`https://api.github.com` → `https://github.com`), GitHub Enterprise Server
    (`https://HOST/api/v3` → `https://HOST`), GHE.com (`https://api.NAME.ghe.com` →
    `https://NAME.ghe.com`), and anything else (a local fake such as `http://127.0.0.1:PORT`)
    serves all three at the same base. Credentials in the setting never reach these URLs.
    """

    api_url: str
    web_url: str

    @classmethod
    def from_api_url(cls, api_url: str) -> GitHubHost:
        parts = urlsplit(api_url.strip())
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(E_API_URL.format(url=api_url))
        shown = f"[{host}]" if ":" in host else host
        netloc = f"{shown}:{parts.port}" if parts.port else shown
        path = parts.path.rstrip("/")
        api = f"{parts.scheme}://{netloc}{path}"
        if host == "api.github.com":
            return cls(api_url=api, web_url=GITHUB_WEB)
        ghe_com = _GHE_COM.fullmatch(host)
        if ghe_com:
            web_netloc = f"{ghe_com[1]}.ghe.com" + (f":{parts.port}" if parts.port else "")
            return cls(api_url=api, web_url=f"{parts.scheme}://{web_netloc}")
        return cls(api_url=api, web_url=f"{parts.scheme}://{netloc}{path.removesuffix('/api/v3')}")

    @classmethod
    def of(cls, settings: Settings) -> GitHubHost:
        return cls.from_api_url(settings.github_api_url)

    @property
    def web_netloc(self) -> str:
        """host[:port] of the web and git URLs (what a clone URL must point at to get a token)."""
        return urlsplit(self.web_url).netloc

    def repo_url(self, repo: str) -> str:
        return f"{self.web_url}/{_checked(repo)}"

    def clone_url(self, repo: str) -> str:
        """The HTTPS git URL of `OWNER/REPO` (raises ValueError for anything else)."""
        return f"{self.web_url}/{_checked(repo)}.git"


def repo_problem(repo: str) -> str | None:
    return None if REPO_RE.fullmatch(repo) else E_REPO.format(repo=repr(repo[:120]))


def _checked(repo: str) -> str:
    problem = repo_problem(repo)
    if problem:
        raise ValueError(problem)
    return repo
