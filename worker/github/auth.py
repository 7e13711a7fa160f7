"""Who skyrun is on GitHub: a token, or a GitHub App's installation tokens cached until expiry.

PyGithub blocks: everything here is called from threads (`asyncio.to_thread`), never from the
event loop, and keeps its state behind a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from github import Auth, Github, GithubIntegration, GithubRetry
from github.GithubException import (
    BadCredentialsException,
    GithubException,
    RateLimitExceededException,
)
from temporalio.exceptions import ApplicationError

from worker.contract import RunRequest
from worker.masking import Masker
from worker.settings import Settings

TOKEN_MARGIN = timedelta(minutes=5)
"""An installation token is replaced this long before it expires (a run's reports span minutes)."""
MAX_RATE_LIMIT_DELAY = timedelta(minutes=15)

E_NO_CREDENTIALS = (
    "this skyrun worker has no GitHub credentials: set GITHUB_TOKEN, or GITHUB_APP_ID with "
    "GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_PATH"
)
E_NO_PRIVATE_KEY = (
    "GITHUB_APP_ID is set but neither GITHUB_APP_PRIVATE_KEY nor GITHUB_APP_PRIVATE_KEY_PATH is"
)
E_RATE_LIMITED = "GitHub rate limit reached; retrying in {seconds} s"
NO_CREDENTIALS_TYPE = "NoGitHubCredentials"


@dataclass(frozen=True)
class ClientOptions:
    """How the PyGithub clients behave. The defaults keep GitHub's advised pacing (production)."""

    seconds_between_requests: float = 0.25
    seconds_between_writes: float = 1.0
    retries: int = 2
    """Quick in-call retries of 5xx and short rate-limit waits; Temporal retries the rest."""
    timeout_s: int = 15
    max_rate_limit_wait_s: float = 20.0

    @classmethod
    def unpaced(cls) -> ClientOptions:
        """No pacing and no in-call retries (tests, where the fake answers in microseconds)."""
        return cls(seconds_between_requests=0, seconds_between_writes=0, retries=0, timeout_s=10)


def web_netloc(api_url: str) -> str:
    """Where GitHub serves git for this API: api.github.com → github.com, GHE → the same host."""
    netloc = urlsplit(api_url).netloc.rsplit("@", 1)[-1].lower()
    return "github.com" if netloc == "api.github.com" else netloc


def _private_key(settings: Settings) -> str | None:
    if settings.github_app_private_key is not None:
        # One-line env values carry the PEM's newlines escaped.
        return settings.github_app_private_key.get_secret_value().replace("\\n", "\n")
    if settings.github_app_private_key_path is not None:
        return settings.github_app_private_key_path.expanduser().read_text()
    return None


class GitHubAuth:
    """Clients and tokens for one GitHub (the settings' GITHUB_API_URL)."""

    def __init__(
        self,
        settings: Settings,
        options: ClientOptions | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        masker: Masker | None = None,
    ) -> None:
        self.masker = masker or Masker.from_settings(settings)
        """The worker's masker: every installation token minted here is added to it."""
        self.api_url = settings.github_api_url.rstrip("/")
        self.options = options or ClientOptions()
        self._clock = clock
        self._token = settings.github_token.get_secret_value() if settings.github_token else None
        self._app_id = settings.github_app_id
        self._private_key = _private_key(settings) if self._app_id else None
        if self._app_id and not self._private_key:
            raise ValueError(E_NO_PRIVATE_KEY)
        self._webhook_secret = (
            settings.github_webhook_secret.get_secret_value()
            if settings.github_webhook_secret
            else None
        )
        self._integration: GithubIntegration | None = None
        self._tokens: dict[int, tuple[str, datetime]] = {}
        self._installations: dict[str, int] = {}
        self._clients: dict[str, Github] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return self._token is not None or self._app_id is not None

    @property
    def is_app(self) -> bool:
        return self._app_id is not None

    def _retry(self) -> GithubRetry | None:
        if self.options.retries <= 0:
            return None
        return GithubRetry(
            total=self.options.retries,
            backoff_factor=0.5,
            max_rate_limit_wait=self.options.max_rate_limit_wait_s,
        )

    def _app(self) -> GithubIntegration:
        if self._integration is None:
            assert self._app_id is not None and self._private_key is not None
            self._integration = GithubIntegration(
                auth=Auth.AppAuth(self._app_id, self._private_key),
                base_url=self.api_url,
                timeout=self.options.timeout_s,
                retry=self._retry(),
                seconds_between_requests=self.options.seconds_between_requests,
                seconds_between_writes=self.options.seconds_between_writes,
            )
        return self._integration

    def token(self, repo: str, installation_id: int | None = None) -> str:
        """A token that may act on `repo`: the configured one, or its installation's (cached)."""
        if not self.configured:
            raise ApplicationError(E_NO_CREDENTIALS, type=NO_CREDENTIALS_TYPE, non_retryable=True)
        if not self.is_app:
            assert self._token is not None
            return self._token
        with self._lock:
            installation = installation_id or self._installations.get(repo.lower())
            if installation is None:
                owner, _, name = repo.partition("/")
                installation = self._app().get_repo_installation(owner, name).id
                self._installations[repo.lower()] = installation
            cached = self._tokens.get(installation)
            if cached is not None and cached[1] - TOKEN_MARGIN > self._clock():
                return cached[0]
            minted = self._app().get_access_token(installation)
            self.masker.add(minted.token)
            expires = minted.expires_at or self._clock() + timedelta(hours=1)
            self._tokens[installation] = (minted.token, expires)
            if cached is not None:
                self._clients.pop(cached[0], None)
            return minted.token

    def client(self, repo: str, installation_id: int | None = None) -> Github:
        """A lazy PyGithub client for `repo` (objects load only what is asked of them)."""
        token = self.token(repo, installation_id)
        with self._lock:
            client = self._clients.get(token)
            if client is None:
                client = Github(
                    auth=Auth.Token(token),
                    base_url=self.api_url,
                    timeout=self.options.timeout_s,
                    retry=self._retry(),
                    seconds_between_requests=self.options.seconds_between_requests,
                    seconds_between_writes=self.options.seconds_between_writes,
                    lazy=True,
                )
                self._clients[token] = client
            return client

    def forget(self) -> None:
        """Drop cached installation tokens (GitHub refused one), so the next call mints afresh."""
        with self._lock:
            for token, _ in self._tokens.values():
                self._clients.pop(token, None)
            self._tokens.clear()

    def token_for_request(self, request: RunRequest) -> str | None:
        """The token for cloning `request`, only when its clone URL is on this GitHub's host."""
        if not self.configured or urlsplit(request.clone_url).scheme not in ("http", "https"):
            return None
        if urlsplit(request.clone_url).netloc.lower() != web_netloc(self.api_url):
            return None
        installation = request.github.installation_id if request.github else None
        return self.token(request.repo, installation)

    def secrets(self) -> list[str]:
        """Every secret value this worker holds (settings and minted tokens): the masker's."""
        return self.masker.secrets


@contextmanager
def api_errors(auth: GitHubAuth) -> Iterator[None]:
    """Turn PyGithub's errors into what Temporal should do about them."""
    try:
        yield
    except RateLimitExceededException as err:
        delay = _rate_limit_delay(err)
        raise ApplicationError(
            E_RATE_LIMITED.format(seconds=int(delay.total_seconds())),
            type="GitHubRateLimited",
            next_retry_delay=delay,
        ) from None
    except BadCredentialsException:
        auth.forget()
        raise


def _rate_limit_delay(err: GithubException) -> timedelta:
    headers = {k.lower(): v for k, v in (err.headers or {}).items()}
    if "retry-after" in headers and str(headers["retry-after"]).isdigit():
        delay = timedelta(seconds=int(headers["retry-after"]))
    elif str(headers.get("x-ratelimit-reset", "")).isdigit():
        reset = datetime.fromtimestamp(int(headers["x-ratelimit-reset"]), UTC)
        delay = reset - datetime.now(UTC)
    else:
        delay = timedelta(minutes=1)
    return max(timedelta(seconds=1), min(delay, MAX_RATE_LIMIT_DELAY))
