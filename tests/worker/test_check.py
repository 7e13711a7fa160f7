"""`skyrun check`: each configured credential is tried against its API, never assumed.

Against the fake GitHub and Slack (real HTTP servers) and the session's Temporal server: a good
credential says ok, a refused or broken one says FAIL naming the setting to fix (never its value),
and the exit status is non-zero; a service that never answers is given up on in seconds, without
blocking the event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.github import FakeGitHub, unknown_app_key
from tests.fakes.slack import BOT_NAME, BOT_TOKEN, SIGNING_SECRET, TEAM_NAME, FakeSlack
from worker.check import (
    CHECK_TIMEOUT_S,
    FAIL,
    OFF,
    OK,
    REQUEST_TIMEOUT_S,
    Check,
    run_check,
    run_checks,
)
from worker.github.auth import E_NO_PRIVATE_KEY, KEY_NOT_PEM
from worker.settings import Settings, load_settings

REPO = "acme/ml"
APP_ID = "4242"


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github") as fake:
        fake.add_repo(REPO, {"README.md": "hi"}, private=True)
        yield fake


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def silent() -> Iterator[str]:
    """A URL whose server takes connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


async def test_every_good_credential_is_proven_and_says_so(
    github: FakeGitHub,
    slack: FakeSlack,
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = github.enable_app(APP_ID, slug="skyrun-test")
    github.install(77, REPO)
    github.install(78, "bob/tools")
    settings = make_settings(
        GITHUB_API_URL=github.url,
        GITHUB_TOKEN=github.token,
        GITHUB_APP_ID=APP_ID,
        GITHUB_APP_PRIVATE_KEY=key,
        GITHUB_WEBHOOK_SECRET="s",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
    )

    assert await run_check(settings) == 0
    out = capsys.readouterr().out
    names = [line[:10].rstrip() for line in out.splitlines()]
    assert names == [
        "temporal",
        "github",
        "github app",
        "slack",
        "skypilot",
        "sandbox",
        "webhook",
    ], out
    assert all(line[11:16].rstrip() == OK for line in out.splitlines()[:4]), out
    checks = by_name(await run_checks(settings))
    assert (
        checks["temporal"].status == OK and settings.temporal_namespace in checks["temporal"].detail
    )
    token = checks["github"]
    assert token.status == OK and f"accepted by {github.url} as skyrun-bot" in token.detail
    assert "not used: GITHUB_APP_ID is set" in token.detail
    app = checks["github app"]
    assert app.status == OK, app
    assert "GitHub App skyrun-test (GITHUB_APP_ID 4242)" in app.detail
    assert "2 installation(s): acme, bob" in app.detail
    assert "installation token minted for acme" in app.detail
    assert len(github.minted) == 2, "one installation token per check"
    slack_check = checks["slack"]
    assert slack_check.status == OK
    assert slack_check.detail.endswith(f"auth.test: bot {BOT_NAME} in workspace {TEAM_NAME}")
    assert checks["skypilot"].status == OFF
    for secret in (github.token, key.splitlines()[1], BOT_TOKEN, *github.minted):
        assert secret not in out


async def test_a_refused_github_token_fails_naming_the_setting(
    github: FakeGitHub, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "ghp_" + "x" * 36
    settings = make_settings(GITHUB_API_URL=github.url, GITHUB_TOKEN=wrong)

    assert await run_check(settings) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("github"))
    assert line.split()[1] == FAIL
    assert f"GITHUB_TOKEN was refused by {github.url} (401 Bad credentials)" in line
    assert wrong not in out


async def test_an_app_with_a_key_github_does_not_know_fails_naming_app_id_and_key(
    github: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    github.enable_app(APP_ID)
    github.install(77, REPO)
    key = unknown_app_key()
    settings = make_settings(
        GITHUB_API_URL=github.url, GITHUB_APP_ID=APP_ID, GITHUB_APP_PRIVATE_KEY=key
    )

    checks = by_name(await run_checks(settings))
    app = checks["github app"]
    assert app.status == FAIL
    assert app.detail.startswith("GitHub refused the App's JWT: check GITHUB_APP_ID (4242)")
    assert "GITHUB_APP_PRIVATE_KEY" in app.detail
    assert "github" not in checks, "no GITHUB_TOKEN: no line for it"
    assert github.calls("GET", "^/app$") and not github.minted
    assert key.splitlines()[1] not in app.detail


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"GITHUB_APP_PRIVATE_KEY": "not a key"},
            f"GITHUB_APP_PRIVATE_KEY is not a GitHub App private key: {KEY_NOT_PEM}",
        ),
        ({}, E_NO_PRIVATE_KEY),
    ],
)
async def test_an_app_key_that_does_not_load_fails_without_asking_github(
    github: FakeGitHub,
    make_settings: Callable[..., Settings],
    values: dict[str, str],
    expected: str,
) -> None:
    github.enable_app(APP_ID)
    settings = make_settings(GITHUB_API_URL=github.url, GITHUB_APP_ID=APP_ID, **values)

    app = by_name(await run_checks(settings))["github app"]
    assert app.status == FAIL and app.detail.startswith(expected), app
    assert github.requests == []


async def test_an_app_installed_nowhere_or_suspended_fails(
    github: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = github.enable_app(APP_ID, slug="skyrun-test")
    settings = make_settings(
        GITHUB_API_URL=github.url, GITHUB_APP_ID=APP_ID, GITHUB_APP_PRIVATE_KEY=key
    )
    app = by_name(await run_checks(settings))["github app"]
    assert app.status == FAIL
    assert app.detail.startswith("the GitHub App skyrun-test is installed nowhere: install it")

    github.install(77, REPO)
    github.suspended.add(77)
    app = by_name(await run_checks(settings))["github app"]
    assert app.status == FAIL
    assert "would not mint a token for installation 77" in app.detail
    assert "This installation has been suspended" in app.detail


async def test_a_refused_slack_token_fails_naming_the_setting(
    slack: FakeSlack, make_settings: Callable[..., Settings]
) -> None:
    wrong = "xoxb-wrong-token"
    settings = make_settings(
        SLACK_BOT_TOKEN=wrong, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=slack.api_url
    )
    check = by_name(await run_checks(settings))["slack"]
    assert check.status == FAIL
    assert check.detail.startswith(
        f"SLACK_BOT_TOKEN was refused by {slack.api_url}auth.test (invalid_auth)"
    )
    assert wrong not in check.detail
    assert [call.method for call in slack.calls] == ["auth.test"]


async def test_a_slack_api_url_that_is_not_slack_fails(
    github: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=github.url
    )
    check = by_name(await run_checks(settings))["slack"]
    assert check.status == FAIL and "not Slack's JSON: check SLACK_API_URL" in check.detail


async def test_temporal_is_asked_for_the_namespace_and_an_absent_server_fails(
    make_settings: Callable[..., Settings],
) -> None:
    check = by_name(await run_checks(make_settings(TEMPORAL_NAMESPACE="no-such-namespace")))
    assert check["temporal"].status == FAIL
    assert "no namespace 'no-such-namespace': check TEMPORAL_NAMESPACE" in check["temporal"].detail

    gone = make_settings(TEMPORAL_ADDRESS=f"127.0.0.1:{closed_port()}")
    check = by_name(await run_checks(gone))
    assert check["temporal"].status == FAIL and "TEMPORAL_ADDRESS" in check["temporal"].detail


async def test_services_that_never_answer_are_given_up_on_without_blocking_the_loop(
    silent: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        GITHUB_API_URL=silent,
        GITHUB_TOKEN="ghp_whatever",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=silent + "/api/",
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    loop = asyncio.get_running_loop()
    started = loop.time()
    ticking = asyncio.create_task(ticker())
    try:
        checks = by_name(await run_checks(settings))
    finally:
        ticking.cancel()
    elapsed = loop.time() - started

    assert checks["github"].status == FAIL and "check GITHUB_API_URL" in checks["github"].detail
    assert checks["slack"].status == FAIL and "Timeout" in checks["slack"].detail
    assert elapsed < min(CHECK_TIMEOUT_S, 2 * REQUEST_TIMEOUT_S), "checks run at once, bounded"
    assert ticks >= elapsed / 0.05 * 0.5, "the event loop kept running while GitHub was asked"


async def test_skyrun_check_exits_non_zero_when_a_credential_fails(
    github: FakeGitHub, settings: Settings
) -> None:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_target,
        "SKYRUN_DATA_DIR": str(settings.data_path),
        "GITHUB_API_URL": github.url,
        "GITHUB_TOKEN": "ghp_refused_by_the_fake",
    }
    for name in ("GITHUB_APP_ID", "SLACK_BOT_TOKEN", "SKYPILOT_API_SERVER_ENDPOINT"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "check",
        env=env,
        cwd=settings.data_path.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, (out, err)
    assert b"temporal   ok" in out
    assert b"GITHUB_TOKEN was refused by" in out and b"ghp_refused_by_the_fake" not in out + err


@pytest.fixture
async def refusing_skypilot() -> AsyncIterator[str]:
    """An API server with authentication on, as SkyPilot answers a client that has no login."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"detail": "Authentication required"}, status=401)

    app = web.Application()
    app.router.add_get("/api/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_skypilot_api_server_is_asked_as_the_sdk_would_and_failures_say_what_to_do(
    refusing_skypilot: str, github: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    def skypilot(endpoint: str) -> Settings:
        return make_settings(SKYRUN_BACKEND="skypilot", SKYPILOT_API_SERVER_ENDPOINT=endpoint)

    needs_login = by_name(await run_checks(skypilot(refusing_skypilot)))["skypilot"]
    assert needs_login.status == FAIL
    assert f"run `sky api login -e {refusing_skypilot}`" in needs_login.detail
    assert "SKYPILOT_SERVICE_ACCOUNT_TOKEN" in needs_login.detail

    for endpoint in (f"http://127.0.0.1:{closed_port()}", github.url):
        check = by_name(await run_checks(skypilot(endpoint)))["skypilot"]
        assert check.status == FAIL, check
        assert check.detail.endswith("check SKYPILOT_API_SERVER_ENDPOINT"), check


async def test_a_github_outage_is_not_mistaken_for_a_refused_credential(
    github: FakeGitHub, make_settings: Callable[..., Settings]
) -> None:
    key = github.enable_app(APP_ID)
    github.install(77, REPO)
    github.outage = True
    settings = make_settings(
        GITHUB_API_URL=github.url,
        GITHUB_TOKEN=github.token,
        GITHUB_APP_ID=APP_ID,
        GITHUB_APP_PRIVATE_KEY=key,
    )
    checks = by_name(await run_checks(settings))
    for name in ("github", "github app"):
        assert checks[name].status == FAIL
        assert checks[name].detail.startswith(f"{github.url} answered 503"), checks[name]
        assert "try again later" in checks[name].detail
        assert "refused" not in checks[name].detail


async def test_a_temporal_tls_file_that_cannot_be_read_names_the_settings(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    missing = tmp_path / "client.pem"
    settings = make_settings(TEMPORAL_TLS_CERT_PATH=missing, TEMPORAL_TLS_KEY_PATH=missing)
    check = by_name(await run_checks(settings))["temporal"]
    assert check.status == FAIL
    assert check.detail.startswith(f"{missing}: No such file or directory; check TEMPORAL_TLS_")


async def test_half_a_slack_configuration_says_which_setting_is_missing(
    make_settings: Callable[..., Settings],
) -> None:
    check = by_name(await run_checks(make_settings(SLACK_BOT_TOKEN=BOT_TOKEN)))["slack"]
    assert check.status == OFF
    assert check.detail.startswith("SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not")


async def test_the_sandbox_check_starts_it_and_says_why_when_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.backends.sandbox import BWRAP_FAILED
    from worker.check import _sandbox

    data = tmp_path / "data"
    settings = load_settings(_env_file=None, SKYRUN_DATA_DIR=data)
    assert (await _sandbox(settings)).status == "ok"
    off = load_settings(_env_file=None, SKYRUN_DATA_DIR=data, SKYRUN_LOCAL_SANDBOX="off")
    check = await _sandbox(off)
    assert (check.status, "SKYRUN_LOCAL_SANDBOX=off" in check.detail) == ("off", True)

    bin_dir = tmp_path / "fake-bwrap"
    bin_dir.mkdir()
    (bin_dir / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions' >&2\nexit 1\n")
    (bin_dir / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    check = await _sandbox(settings)
    assert check.status == "FAIL"
    assert check.detail == BWRAP_FAILED.format(error="bwrap: No permissions")
