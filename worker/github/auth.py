"""Who skyrun is on GitHub: a token, or a GitHub App's installation tokens cached until expiry.

PyGithub blocks: everything here is called from threads (`asyncio.to_thread`), never from the
event loop, and keeps its state behind a lock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from github import Auth, Github, GithubIntegration, GithubRetry
from github.GithubException import (
    GithubException,
    RateLimitExceededException,
)
from requests import RequestException
from temporalio.exceptions import ApplicationError

from worker.contract import RunRequest
from worker.links import GitHubHost
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

# Credential errors: not retried, and each names the setting to fix (never its value).
CREDENTIALS_TYPE = "GitHubCredentials"
E_TOKEN_REFUSED = (
    "GITHUB_TOKEN was refused by {api} (401 {said}): the token is wrong, expired or revoked; "
    "set GITHUB_TOKEN to a valid token with access to the repositories"
)
E_APP_REFUSED = (
    "GitHub refused the App's JWT: check GITHUB_APP_ID ({app_id}) and the private key "
    "({key_setting}), which must belong to the same App ({api} answered 401 {said})"
)
E_KEY_UNREADABLE = (
    "GITHUB_APP_PRIVATE_KEY_PATH ({path}) cannot be read ({reason}): point it at the App's "
    ".pem file, readable by the worker"
)
E_KEY_INVALID = (
    "{setting} is not a GitHub App private key: {problem}; use the .pem file that the App's "
    "settings page generates (in GITHUB_APP_PRIVATE_KEY newlines may be written as \\n)"
)
KEY_NOT_PEM = "it does not parse as a PEM private key"
KEY_ENCRYPTED = "it is encrypted with a passphrase"
KEY_NOT_RSA = "it is not an RSA key (GitHub Apps sign with RS256)"
E_NOT_INSTALLED = (
    "the GitHub App {app_id} is not installed on {repo}, or {repo} does not exist ({api} "
    "answered 404): install the App on the repository (the App's settings, Install App), or "
    "check GITHUB_APP_ID"
)
E_INSTALLATION_REFUSED = (
    "GitHub would not mint a token for installation {installation} of the App {app_id} "
    "({status} {said}): the App was uninstalled or suspended there; install it again, or "
    "check GITHUB_APP_ID"
)
E_NO_INSTALLATIONS = (
    "the GitHub App {app} is installed nowhere: install it on the repositories skyrun should act "
    "for (the App's settings, Install App)"
)
TOKEN_OK = "GITHUB_TOKEN accepted by {api}{who}; {remaining} of {limit} requests left this hour"
APP_OK = (
    "GitHub App {app} (GITHUB_APP_ID {app_id}) accepted by {api}; {count} installation(s): "
    "{accounts}; installation token minted for {account}"
)
MAX_SAID = 200
"""GitHub's own words in an error are kept, this long at most."""

_LOGGED_SECRETS = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
    r'|"token"\s*:\s*"[^"]*"'
    r"|\bgh[pousr]_[A-Za-z0-9_]{8,}|\bgithub_pat_[A-Za-z0-9_]{8,}"
    r"|\beyJ[\w-]+\.[\w-]+\.[\w-]+",
    re.S,
)
"""What must never reach a log: PEM keys, minted tokens (PyGithub logs response bodies at DEBUG,
the installation token's included), GitHub tokens and JWTs."""
_PYGITHUB_LOGGERS = ("github.Requester", "github.GithubRetry")


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


class _RedactSecrets(logging.Filter):
    """Rewrite a record whose text holds a secret before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = _LOGGED_SECRETS.sub("***", message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _redact_pygithub_logs() -> None:
    for name in _PYGITHUB_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactSecrets) for f in logger.filters):
            logger.addFilter(_RedactSecrets())


def _credential_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=CREDENTIALS_TYPE, non_retryable=True)


def _said(err: GithubException, secrets: list[str]) -> str:
    """GitHub's message in an error answer, bounded and scrubbed."""
    data = err.data if isinstance(err.data, dict) else {}
    said = " ".join(str(data.get("message") or "").split())[:MAX_SAID]
    for secret in secrets:
        said = said.replace(secret, "***")
    return said


def _key_setting(settings: Settings) -> str:
    if settings.github_app_private_key is not None:
        return "GITHUB_APP_PRIVATE_KEY"
    return "GITHUB_APP_PRIVATE_KEY_PATH"


def _load_private_key(settings: Settings) -> RSAPrivateKey:
    """The App's key, parsed; an error naming the setting (never its value) when it is not one."""
    setting = _key_setting(settings)
    if settings.github_app_private_key is not None:
        # One-line env values carry the PEM's newlines escaped.
        text = settings.github_app_private_key.get_secret_value().replace("\\n", "\n")
    else:
        path = settings.github_app_private_key_path
        assert path is not None
        try:
            text = path.expanduser().read_text()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else "not text"
            raise _credential_error(E_KEY_UNREADABLE.format(path=path, reason=reason)) from None
    problem = ""
    try:
        key = serialization.load_pem_private_key(text.strip().encode(), password=None)
    except TypeError:
        problem = KEY_ENCRYPTED
    except Exception:  # cryptography raises several types for malformed input
        problem = KEY_NOT_PEM
    else:
        if isinstance(key, RSAPrivateKey):
            return key
        problem = KEY_NOT_RSA
    raise _credential_error(E_KEY_INVALID.format(setting=setting, problem=problem))


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
        self.host = GitHubHost.of(settings)
        self.api_url = self.host.api_url
        self.options = options or ClientOptions()
        self._clock = clock
        self._settings = settings
        self._token = settings.github_token.get_secret_value() if settings.github_token else None
        self._app_id = settings.github_app_id
        if self._app_id and not (
            settings.github_app_private_key or settings.github_app_private_key_path
        ):
            raise ValueError(E_NO_PRIVATE_KEY)
        self._key_setting = _key_setting(settings)
        self._webhook_secret = (
            settings.github_webhook_secret.get_secret_value()
            if settings.github_webhook_secret
            else None
        )
        self._integration: GithubIntegration | None = None
        self._tokens: dict[int, tuple[str, datetime]] = {}
        self._installations: dict[str, int] = {}
        self._clients: dict[str, Github] = {}
        self._token_verified = False
        self._lock = threading.RLock()  # secrets() is read while a token is minted
        _redact_pygithub_logs()

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
        """The App's client; the key is parsed here, so a bad one fails the first use clearly."""
        if self._integration is None:
            assert self._app_id is not None
            key = _load_private_key(self._settings)
            self._integration = GithubIntegration(
                # A callable: PyGithub then holds the parsed key, never the PEM text.
                auth=Auth.AppAuth(self._app_id, lambda: key),  # type: ignore[arg-type,return-value]
                base_url=self.api_url,
                timeout=self.options.timeout_s,
                retry=self._retry(),
                seconds_between_requests=self.options.seconds_between_requests,
                seconds_between_writes=self.options.seconds_between_writes,
            )
        return self._integration

    @contextmanager
    def _app_errors(
        self, repo: str | None = None, installation: int | None = None
    ) -> Iterator[None]:
        """GitHub's answers to the App's JWT that no retry can change, as credential errors.

        With `repo`, a 404 means the App is not installed there; with `installation`, a 404 or
        403 means that installation is gone or suspended. Anything else stays GitHub's error.
        """
        try:
            yield
        except RateLimitExceededException:
            raise
        except GithubException as err:
            # PyGithub makes only "Bad credentials" a BadCredentialsException: go by the status.
            if err.status != 401:
                refusal = self._installation_error(err, repo, installation)
                if refusal is None:
                    raise
                raise refusal from None
            raise _credential_error(
                E_APP_REFUSED.format(
                    app_id=self._app_id,
                    key_setting=self._key_setting,
                    api=self.api_url,
                    said=_said(err, self.secrets()),
                )
            ) from None

    def _installation_error(
        self, err: GithubException, repo: str | None, installation: int | None
    ) -> ApplicationError | None:
        if repo is not None and err.status == 404:
            return _credential_error(
                E_NOT_INSTALLED.format(app_id=self._app_id, repo=repo, api=self.api_url)
            )
        if installation is not None and err.status in (403, 404):
            return _credential_error(
                E_INSTALLATION_REFUSED.format(
                    installation=installation,
                    app_id=self._app_id,
                    status=err.status,
                    said=_said(err, self.secrets()),
                )
            )
        return None

    def _mint(self, installation: int) -> tuple[str, datetime]:
        with self._app_errors(installation=installation):
            minted = self._app().get_access_token(installation)
        self.masker.add(minted.token)
        return minted.token, minted.expires_at or self._clock() + timedelta(hours=1)

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
                with self._app_errors(repo=repo):
                    installation = self._app().get_repo_installation(owner, name).id
                self._installations[repo.lower()] = installation
            cached = self._tokens.get(installation)
            if cached is not None and cached[1] - TOKEN_MARGIN > self._clock():
                return cached[0]
            self._tokens[installation] = minted = self._mint(installation)
            if cached is not None:
                self._clients.pop(cached[0], None)
            return minted[0]

    def _client(self, token: str) -> Github:
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

    def client(self, repo: str, installation_id: int | None = None) -> Github:
        """A lazy PyGithub client for `repo` (objects load only what is asked of them)."""
        return self._client(self.token(repo, installation_id))

    def forget(self) -> None:
        """Drop cached installation tokens (GitHub refused one), so the next call mints afresh."""
        with self._lock:
            for token, _ in self._tokens.values():
                self._clients.pop(token, None)
            self._tokens.clear()
            self._token_verified = False

    def token_refused(self, err: GithubException) -> ApplicationError:
        """The credential error for GitHub's 401 to GITHUB_TOKEN."""
        return _credential_error(
            E_TOKEN_REFUSED.format(api=self.api_url, said=_said(err, self.secrets()))
        )

    def token_for_request(self, request: RunRequest) -> str | None:
        """The token for cloning `request`, only when its clone URL is on this GitHub's host.

        GITHUB_TOKEN is proven once (GET /rate_limit) before its first clone, so a refused token
        fails the run naming the setting instead of as a git error; when GitHub's API does not
        answer, the clone goes ahead (git may still serve).
        """
        if not self.configured or urlsplit(request.clone_url).scheme not in ("http", "https"):
            return None
        if urlsplit(request.clone_url).netloc.lower() != self.host.web_netloc:
            return None
        installation = request.github.installation_id if request.github else None
        token = self.token(request.repo, installation)
        if not self.is_app and not self._token_verified:
            try:
                self._client(token).get_rate_limit()
            except GithubException as err:
                if err.status == 401:
                    raise self.token_refused(err) from None
                return token
            except RequestException:
                return token
            self._token_verified = True
        return token

    def verify_token(self) -> str:
        """Ask GitHub whether GITHUB_TOKEN works: what it said, or a credential error."""
        assert self._token is not None
        client = self._client(self._token)
        try:
            core = client.get_rate_limit().resources.core
        except GithubException as err:
            if err.status == 401:
                raise self.token_refused(err) from None
            raise
        try:
            who = f" as {client.get_user().login}"
        except GithubException:  # installation and Actions tokens have no user
            who = ""
        return TOKEN_OK.format(
            api=self.api_url, who=who, remaining=core.remaining, limit=core.limit
        )

    def verify_app(self) -> str:
        """Prove the App's credentials: GET /app, list its installations, mint a token for one."""
        assert self._app_id is not None
        with self._app_errors():
            app = self._app().get_app()
            installations = list(self._app().get_installations())
        name = app.slug or app.name or str(app.id)
        if not installations:
            raise _credential_error(E_NO_INSTALLATIONS.format(app=name))
        first = installations[0]
        self._mint(first.id)
        accounts = ", ".join(i.account.login for i in installations[:5])
        more = len(installations) - 5
        return APP_OK.format(
            app=name,
            app_id=self._app_id,
            api=self.api_url,
            count=len(installations),
            accounts=accounts + (f" and {more} more" if more > 0 else ""),
            account=first.account.login,
        )

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
    except GithubException as err:
        if err.status != 401:
            raise
        # An installation token can be revoked early: forget it and let the retry mint afresh.
        # GITHUB_TOKEN cannot change by retrying.
        auth.forget()
        if auth.is_app:
            raise
        raise auth.token_refused(err) from None


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
