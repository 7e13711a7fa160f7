"""Tokens and clients: a token, or a GitHub App's installation tokens cached until they expire."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from github.GithubException import BadCredentialsException, RateLimitExceededException
from temporalio.exceptions import ApplicationError

from tests.fakes.github import FakeGitHub
from worker.contract import GitHubTarget, RunRequest
from worker.github.auth import (
    E_NO_CREDENTIALS,
    E_NO_PRIVATE_KEY,
    ClientOptions,
    GitHubAuth,
    api_errors,
    web_netloc,
)
from worker.settings import Settings

REPO = "acme/ml"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github") as github:
        github.add_repo(REPO, {"README.md": "hi"}, private=True)
        yield github


def request(fake: FakeGitHub, installation: int | None = None, url: str = "") -> RunRequest:
    return RunRequest(
        repo=REPO,
        clone_url=url or f"{fake.url}/{REPO}.git",
        github=GitHubTarget(installation_id=installation),
    )


def test_a_token_is_used_as_it_is_and_only_for_this_github(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    auth = GitHubAuth(
        make_settings(GITHUB_TOKEN=fake.token, GITHUB_API_URL=fake.url), ClientOptions.unpaced()
    )

    assert auth.configured and not auth.is_app
    assert auth.token(REPO) == fake.token
    assert auth.client(REPO) is auth.client(REPO)
    assert auth.client(REPO).get_repo(REPO).get_collaborator_permission("acme") == "admin"
    assert auth.token_for_request(request(fake)) == fake.token
    for elsewhere in ("https://gitlab.com/acme/ml.git", "/srv/repos/ml", "git@github.com:a/b"):
        assert auth.token_for_request(request(fake, url=elsewhere)) is None
    assert fake.token in auth.secrets()


def test_without_credentials_nothing_is_sent_and_use_is_refused_clearly(
    make_settings: Callable[..., Settings],
) -> None:
    auth = GitHubAuth(make_settings())
    assert not auth.configured
    assert auth.token_for_request(RunRequest(repo=REPO, clone_url="https://github.com/a/b")) is None
    with pytest.raises(ApplicationError, match="no GitHub credentials") as caught:
        auth.token(REPO)
    assert caught.value.non_retryable and caught.value.message == E_NO_CREDENTIALS


def test_app_installation_tokens_are_cached_until_shortly_before_they_expire(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = fake.enable_app("4242")
    fake.install(77, REPO)
    now = [datetime.now(UTC)]
    settings = make_settings(
        GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=key, GITHUB_API_URL=fake.url
    )
    auth = GitHubAuth(settings, ClientOptions.unpaced(), clock=lambda: now[0])

    first = auth.token(REPO, 77)
    assert auth.token(REPO, 77) == first
    assert auth.token_for_request(request(fake, 77)) == first
    assert auth.client(REPO, 77).get_repo(REPO).get_collaborator_permission("acme") == "admin"
    assert fake.minted == [first]

    now[0] += fake.token_ttl - timedelta(minutes=4)  # within the refresh margin
    second = auth.token(REPO, 77)
    assert second != first and fake.minted == [first, second]
    assert second in auth.secrets()


def test_an_app_finds_the_installation_of_a_repository_once(
    fake: FakeGitHub, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(fake.enable_app("4242"))
    fake.install(78, REPO)
    settings = make_settings(
        GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY_PATH=key_file, GITHUB_API_URL=fake.url
    )
    auth = GitHubAuth(settings, ClientOptions.unpaced())

    assert auth.token(REPO) == auth.token(REPO)
    assert len(fake.calls("GET", f"/repos/{REPO}/installation$")) == 1
    assert len(fake.minted) == 1


def test_a_private_key_in_one_env_line_and_a_missing_key(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    one_line = fake.enable_app("4242").replace("\n", "\\n")
    fake.install(79, REPO)
    settings = make_settings(
        GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=one_line, GITHUB_API_URL=fake.url
    )
    assert GitHubAuth(settings, ClientOptions.unpaced()).token(REPO, 79).startswith("ghs_")
    with pytest.raises(ValueError, match="GITHUB_APP_PRIVATE_KEY") as caught:
        GitHubAuth(make_settings(GITHUB_APP_ID="4242"))
    assert str(caught.value) == E_NO_PRIVATE_KEY


def test_a_refused_installation_token_is_forgotten(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = fake.enable_app("4242")
    fake.install(77, REPO)
    settings = make_settings(
        GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=key, GITHUB_API_URL=fake.url
    )
    auth = GitHubAuth(settings, ClientOptions.unpaced())
    stale = auth.token(REPO, 77)
    fake._tokens[stale] = ("skyrun[bot]", datetime.now(UTC) - timedelta(seconds=1))

    with pytest.raises(BadCredentialsException), api_errors(auth):
        auth.client(REPO, 77).get_repo(REPO).get_collaborator_permission("acme")
    assert auth.token(REPO, 77) != stale


def test_rate_limits_become_a_delayed_retry() -> None:
    auth = GitHubAuth.__new__(GitHubAuth)
    limited = RateLimitExceededException(
        403, {"message": "secondary rate limit"}, {"Retry-After": "42"}
    )
    with pytest.raises(ApplicationError) as caught, api_errors(auth):
        raise limited
    assert caught.value.next_retry_delay == timedelta(seconds=42)
    assert not caught.value.non_retryable


@pytest.mark.parametrize(
    ("api", "netloc"),
    [
        ("https://api.github.com", "github.com"),
        ("https://ghe.example.com/api/v3", "ghe.example.com"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
    ],
)
def test_git_is_served_where_the_api_says(api: str, netloc: str) -> None:
    assert web_netloc(api) == netloc
