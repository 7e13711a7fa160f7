"""Tokens and clients: a token, or a GitHub App's installation tokens cached until they expire.

Credentials are proven, not assumed: GitHub's refusal of a token or of the App's JWT, a key that
does not load, an App not installed, each fails at once (not retried) naming the setting to fix,
and never shows the key or a token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from github.GithubException import BadCredentialsException, RateLimitExceededException
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from tests.fakes.github import FakeGitHub, unknown_app_key
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, message_text
from tests.worker.github.stack import PIPELINE, REPO, github_stack, unique_repo
from worker.contract import GitHubTarget, RunRequest, RunState, SlackTarget, Trigger
from worker.github.auth import (
    CREDENTIALS_TYPE,
    E_NO_CREDENTIALS,
    E_NO_PRIVATE_KEY,
    KEY_ENCRYPTED,
    KEY_NOT_PEM,
    KEY_NOT_RSA,
    ClientOptions,
    GitHubAuth,
    api_errors,
)
from worker.links import GitHubHost
from worker.settings import Settings

PACED_NOT_SLOW = ClientOptions(seconds_between_requests=0, seconds_between_writes=0)
"""Production's in-call retries (2) without the pacing: a refused credential must not be retried."""


def credential_error(caught: pytest.ExceptionInfo[ApplicationError]) -> str:
    """The message of a credential error, checked to be final and free of chained causes."""
    err = caught.value
    assert err.non_retryable and err.type == CREDENTIALS_TYPE, err
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return err.message


@pytest.fixture
def private_repo() -> bool:
    """REPO is private here: clones need the token."""
    return True


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


def test_a_refused_token_fails_at_once_naming_the_setting(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    wrong = "ghp_" + "w" * 36
    auth = GitHubAuth(make_settings(GITHUB_TOKEN=wrong, GITHUB_API_URL=fake.url), PACED_NOT_SLOW)

    with pytest.raises(ApplicationError) as caught:
        auth.token_for_request(request(fake))
    message = credential_error(caught)
    assert message.startswith(f"GITHUB_TOKEN was refused by {fake.url}")
    assert "Bad credentials" in message and wrong not in message
    with pytest.raises(ApplicationError) as caught, api_errors(auth):
        auth.client(REPO).get_repo(REPO).get_collaborator_permission("acme")
    assert credential_error(caught).startswith("GITHUB_TOKEN was refused")
    assert len(fake.calls("GET", "/rate_limit$")) == 1
    assert len(fake.calls("GET", "/permission$")) == 1, "a 401 is not retried"


def test_a_good_token_is_proven_once_and_an_api_outage_does_not_stop_a_clone(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    auth = GitHubAuth(
        make_settings(GITHUB_TOKEN=fake.token, GITHUB_API_URL=fake.url), ClientOptions.unpaced()
    )
    fake.outage = True
    assert auth.token_for_request(request(fake)) == fake.token
    fake.outage = False
    assert auth.token_for_request(request(fake)) == fake.token
    assert auth.token_for_request(request(fake)) == fake.token
    assert len(fake.calls("GET", "/rate_limit$")) == 2, "tried in the outage, then proven once"


def test_an_app_key_github_does_not_know_fails_at_once_naming_app_id_and_key(
    fake: FakeGitHub, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    fake.enable_app("4242")
    fake.install(77, REPO)
    wrong = unknown_app_key()
    key_file = tmp_path / "wrong.pem"
    key_file.write_text(wrong)
    for setting, value in (
        ("GITHUB_APP_PRIVATE_KEY", wrong),
        ("GITHUB_APP_PRIVATE_KEY_PATH", key_file),
    ):
        auth = GitHubAuth(
            make_settings(GITHUB_APP_ID="4242", GITHUB_API_URL=fake.url, **{setting: value}),
            PACED_NOT_SLOW,
        )
        before = len(fake.requests)
        uses = (
            functools.partial(auth.token, REPO),
            functools.partial(auth.token_for_request, request(fake, 77)),
        )
        for call in uses:
            with pytest.raises(ApplicationError) as caught:
                call()
            message = credential_error(caught)
            assert message.startswith("GitHub refused the App's JWT: check GITHUB_APP_ID (4242)")
            assert f"({setting})" in message and "could not be decoded" in message
            assert fake.url in message
        assert len(fake.requests) - before == 2, "one request per use: a 401 is not retried"
    assert fake.minted == []


def test_another_apps_id_is_refused_like_a_wrong_key(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = fake.enable_app("4242")
    fake.install(77, REPO)
    auth = GitHubAuth(
        make_settings(GITHUB_APP_ID="4343", GITHUB_APP_PRIVATE_KEY=key, GITHUB_API_URL=fake.url),
        PACED_NOT_SLOW,
    )
    with pytest.raises(ApplicationError) as caught:
        auth.token(REPO, 77)
    assert "check GITHUB_APP_ID (4343)" in credential_error(caught)


def _encrypted_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()


def _ec_key() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _public_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("make_key", "problem"),
    [
        (lambda: "ghp_this-is-a-token-not-a-key", KEY_NOT_PEM),
        (lambda: unknown_app_key()[:300], KEY_NOT_PEM),
        (_public_key, KEY_NOT_PEM),
        (_encrypted_key, KEY_ENCRYPTED),
        (_ec_key, KEY_NOT_RSA),
    ],
)
def test_a_key_that_does_not_load_names_its_setting_and_sends_nothing(
    fake: FakeGitHub,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    make_key: Callable[[], str],
    problem: str,
) -> None:
    fake.enable_app("4242")
    fake.install(77, REPO)
    key = make_key()
    key_file = tmp_path / "app.pem"
    key_file.write_text(key)
    for setting, value in (
        ("GITHUB_APP_PRIVATE_KEY", key.replace("\n", "\\n")),
        ("GITHUB_APP_PRIVATE_KEY_PATH", key_file),
    ):
        auth = GitHubAuth(
            make_settings(GITHUB_APP_ID="4242", GITHUB_API_URL=fake.url, **{setting: value})
        )
        with pytest.raises(ApplicationError) as caught:
            auth.token(REPO, 77)
        message = credential_error(caught)
        assert message.startswith(f"{setting} is not a GitHub App private key: {problem}")
        for line in key.splitlines():
            if len(line) > 8:
                assert line not in message
    assert fake.requests == []


def test_a_key_file_that_cannot_be_read_names_the_path_setting(
    fake: FakeGitHub, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    auth = GitHubAuth(
        make_settings(
            GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY_PATH=missing, GITHUB_API_URL=fake.url
        )
    )
    with pytest.raises(ApplicationError) as caught:
        auth.token(REPO)
    message = credential_error(caught)
    assert message.startswith(f"GITHUB_APP_PRIVATE_KEY_PATH ({missing}) cannot be read")
    assert "No such file" in message


def test_an_app_not_installed_uninstalled_or_suspended_fails_at_once(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = fake.enable_app("4242")
    fake.install(77, "acme/other")
    fake.install(78, REPO)
    fake.suspended.add(78)
    auth = GitHubAuth(
        make_settings(GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=key, GITHUB_API_URL=fake.url),
        PACED_NOT_SLOW,
    )
    fake.installations[78].discard(REPO)
    with pytest.raises(ApplicationError) as caught:
        auth.token(REPO)
    message = credential_error(caught)
    assert message.startswith(f"the GitHub App 4242 is not installed on {REPO}")

    with pytest.raises(ApplicationError) as caught:
        auth.token(REPO, 99)  # the installation a webhook named is gone
    message = credential_error(caught)
    assert message.startswith("GitHub would not mint a token for installation 99 of the App 4242")
    assert "404 Not Found" in message

    with pytest.raises(ApplicationError) as caught:
        auth.token(REPO, 78)
    assert "403 This installation has been suspended" in credential_error(caught)
    assert fake.minted == []


def test_an_installation_token_refused_later_is_minted_again_not_a_credential_error(
    fake: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = fake.enable_app("4242")
    fake.install(77, REPO)
    auth = GitHubAuth(
        make_settings(GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=key, GITHUB_API_URL=fake.url),
        ClientOptions.unpaced(),
    )
    stale = auth.token(REPO, 77)
    fake._tokens[stale] = ("skyrun[bot]", datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(BadCredentialsException), api_errors(auth):
        auth.client(REPO, 77).get_repo(REPO).get_collaborator_permission("acme")
    assert auth.client(REPO, 77).get_repo(REPO).get_collaborator_permission("acme") == "admin"


def test_neither_key_nor_tokens_reach_an_error_or_a_log_record(
    fake: FakeGitHub,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = fake.enable_app("4242")
    fake.install(77, REPO)
    wrong = unknown_app_key()
    pat = "ghp_" + "p" * 36
    errors: list[BaseException] = []
    # PyGithub logs response bodies (a minted token's too) once its logger is at DEBUG.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="github"):
        good = GitHubAuth(
            make_settings(
                GITHUB_APP_ID="4242",
                GITHUB_APP_PRIVATE_KEY=key,
                GITHUB_API_URL=fake.url,
                GITHUB_TOKEN=pat,
            ),
            PACED_NOT_SLOW,
        )
        assert good.client(REPO, 77).get_repo(REPO).get_collaborator_permission("acme") == "admin"
        assert "installation token minted" in good.verify_app()
        fake._tokens[fake.minted[0]] = ("skyrun[bot]", datetime.now(UTC) - timedelta(seconds=1))
        try:
            with api_errors(good):
                good.client(REPO, 77).get_repo(REPO).get_collaborator_permission("acme")
        except Exception as err:
            errors.append(err)
        for settings in (
            make_settings(
                GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=wrong, GITHUB_API_URL=fake.url
            ),
            make_settings(
                GITHUB_APP_ID="4242", GITHUB_APP_PRIVATE_KEY=wrong[:200], GITHUB_API_URL=fake.url
            ),
            make_settings(GITHUB_TOKEN=pat, GITHUB_API_URL=fake.url),
        ):
            auth = GitHubAuth(settings, PACED_NOT_SLOW)
            verify = auth.verify_app if auth.is_app else auth.verify_token
            for call in (verify, functools.partial(auth.token_for_request, request(fake, 77))):
                try:
                    call()
                except Exception as err:
                    errors.append(err)
    assert len(errors) == 7, errors
    assert fake.minted, "the good App did mint tokens"
    secrets = [pat, *fake.minted]
    secrets += [line for pem in (key, wrong) for line in pem.splitlines() if "-----" not in line]
    texts = [record.getMessage() for record in caplog.records]
    assert any(
        r.name == "github.Requester" and "access_tokens" in r.getMessage() for r in caplog.records
    ), "PyGithub's debug log was captured"
    texts += [f"{err!s} {err!r} {getattr(err, 'details', '')}" for err in errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text, text


async def test_a_run_with_a_wrong_app_key_fails_at_once_naming_the_settings(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(
        client, make_settings, tmp_path, app_id="4242", GITHUB_APP_PRIVATE_KEY=unknown_app_key()
    ) as stack:
        repo = unique_repo()
        stack.fake.add_repo(repo, PIPELINE)
        stack.fake.install(77, repo)
        started = asyncio.get_running_loop().time()
        run_id = await stack.push(repo, "main", stack.fake.head(repo))
        progress = await stack.finished(run_id, timeout=30)
        elapsed = asyncio.get_running_loop().time() - started

        assert progress.state is RunState.FAILED
        assert progress.error.startswith("GitHub refused the App's JWT: check GITHUB_APP_ID (4242)")
        assert "GITHUB_APP_PRIVATE_KEY" in progress.error
        mints = stack.fake.calls("POST", "/access_tokens$")
        assert len(mints) == 1, "one attempt, not five"
        assert elapsed < 10, elapsed
        assert stack.fake.minted == []
        with pytest.raises(WorkflowFailureError):
            await client.get_workflow_handle(run_id).result()


async def test_a_pull_request_run_with_a_refused_token_fails_at_the_gate_at_once(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    wrong = "ghp_" + "r" * 36
    async with github_stack(client, make_settings, tmp_path, GITHUB_TOKEN=wrong) as stack:
        repo = unique_repo()
        stack.fake.add_repo(repo, {**PIPELINE, ".skyrun.yaml": "on: {pull_request: true}\n"})
        stack.fake.commit(repo, {"x.txt": "1"}, branch="feature")
        pull = stack.fake.open_pull(repo, "feature", user="acme")
        response = await stack.deliver(
            "pull_request", stack.fake.pull_request_payload(pull, "opened")
        )
        dispatched = await stack.dispatched(response)
        progress = await stack.finished(dispatched.run_id, timeout=30)

        assert progress.state is RunState.FAILED
        assert progress.error.startswith(f"GITHUB_TOKEN was refused by {stack.fake.url}")
        assert wrong not in progress.error
        assert len(stack.fake.calls("GET", "/permission$")) == 1, "the gate asked once"
        # Reporting the failure is tried (once per report), never retried against a 401.
        refused = [r for r in stack.fake.requests if wrong in r.headers.get("authorization", "")]
        assert len(refused) <= 4, [r.path for r in refused]


async def test_a_slack_run_with_a_refused_token_says_so_in_slack_at_once(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    wrong = "ghp_" + "s" * 36
    async with (
        FakeSlack() as slack,
        github_stack(
            client,
            make_settings,
            tmp_path,
            GITHUB_TOKEN=wrong,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
        ) as stack,
    ):
        repo = unique_repo()
        stack.fake.add_repo(repo, PIPELINE, private=True)
        request = RunRequest(
            repo=repo,
            clone_url=f"{stack.fake.url}/{repo}.git",
            ref="main",
            trigger=Trigger.SLACK,
            requested_by="U0ALICE",
            slack=SlackTarget(channel="C0RUNS", user="U0ALICE"),
        )
        run_id = (await stack.control.start(request)).run_id
        progress = await stack.finished(run_id, timeout=30)

        assert progress.state is RunState.FAILED
        assert progress.error.startswith("GITHUB_TOKEN was refused by")
        assert len(stack.fake.calls("GET", "/rate_limit$")) == 1, "one attempt, not five"
        assert not stack.fake.calls(git=True), "no clone was tried with a refused token"
        texts = [message_text(m) for m in slack.messages.values()]
        assert any("GITHUB_TOKEN was refused by" in text for text in texts), texts
        assert all(wrong not in text for text in texts)


async def test_a_comment_command_with_a_wrong_app_key_fails_at_once_naming_the_settings(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(
        client, make_settings, tmp_path, app_id="4242", GITHUB_APP_PRIVATE_KEY=unknown_app_key()
    ) as stack:
        repo = unique_repo()
        stack.fake.add_repo(repo, PIPELINE)
        stack.fake.install(77, repo)
        stack.fake.commit(repo, {"x.txt": "1"}, branch="feature")
        pull = stack.fake.open_pull(repo, "feature", user="acme")
        comment = stack.fake.add_comment(repo, pull.number, "acme", "/skyrun")

        with pytest.raises(WorkflowFailureError) as caught:
            await stack.command(comment)
        err: BaseException = caught.value
        while getattr(err, "cause", None) is not None:
            err = err.cause  # type: ignore[attr-defined]
        message = str(err)
        assert "GitHub refused the App's JWT: check GITHUB_APP_ID (4242)" in message, message
        # 👀 and the permission check: one token mint each, neither retried.
        assert len(stack.fake.calls("POST", "/access_tokens$")) == 2
        assert stack.fake.minted == [] and stack.fake.reactions(comment) == []


def test_on_ghe_com_clones_get_the_token_and_links_point_at_the_web_host(
    make_settings: Callable[..., Settings],
) -> None:
    """`https://api.acme.ghe.com` serves git and pages at `https://acme.ghe.com`."""
    settings = make_settings(
        GITHUB_TOKEN="ghp_" + "x" * 36, GITHUB_API_URL="https://api.acme.ghe.com"
    )
    host = GitHubHost.of(settings)
    clone = host.clone_url(REPO)
    assert clone == f"https://acme.ghe.com/{REPO}.git"
    assert host.repo_url(REPO) == f"https://acme.ghe.com/{REPO}"
    auth = GitHubAuth(settings, ClientOptions.unpaced())
    assert auth.api_url == "https://api.acme.ghe.com"
    # The API cannot be reached from here: the clone goes ahead with the token all the same.
    assert auth.token_for_request(RunRequest(repo=REPO, clone_url=clone)) == "ghp_" + "x" * 36
    assert auth.token_for_request(RunRequest(repo=REPO, clone_url=f"{auth.api_url}/x.git")) is None
