"""`skyrun check`: what is configured, and whether each configured service answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx

from worker.settings import Backend, Settings
from worker.temporal import connect


@dataclass
class Check:
    name: str
    status: str  # "ok", "FAIL" or "off"
    detail: str


async def _temporal(settings: Settings) -> Check:
    try:
        client = await connect(settings)
        await client.service_client.check_health(timeout=timedelta(seconds=3))
    except Exception as err:  # any failure is reported, not raised
        return Check("temporal", "FAIL", f"{settings.temporal_target}: {err}")
    return Check("temporal", "ok", f"{settings.temporal_target} namespace {client.namespace}")


async def _http(name: str, method: str, url: str, headers: dict[str, str]) -> Check:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.request(method, url, headers=headers)
    except httpx.HTTPError as err:
        return Check(name, "FAIL", f"{url}: {err.__class__.__name__}: {err}")
    if response.status_code >= 400:
        return Check(name, "FAIL", f"{url}: HTTP {response.status_code}")
    return Check(name, "ok", url)


async def _github(settings: Settings) -> Check:
    if settings.github_token is None:
        detail = (
            "GitHub App configured" if settings.github_app_id else "no GITHUB_TOKEN or GitHub App"
        )
        return Check("github", "off" if not settings.github_app_id else "ok", detail)
    token = settings.github_token.get_secret_value()
    return await _http(
        "github",
        "GET",
        f"{settings.github_api_url.rstrip('/')}/rate_limit",
        {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
    )


async def _slack(settings: Settings) -> Check:
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        return Check("slack", "off", "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET not both set")
    token = settings.slack_bot_token.get_secret_value()
    url = settings.slack_api_url.rstrip("/") + "/auth.test"
    return await _http("slack", "POST", url, {"Authorization": f"Bearer {token}"})


async def _skypilot(settings: Settings) -> Check:
    if settings.backend is Backend.LOCAL:
        return Check("skypilot", "off", "SKYRUN_BACKEND=local: tasks run on this machine")
    if not settings.skypilot_api_server_endpoint:
        return Check("skypilot", "ok", "SDK in the worker, no API server (runs pinned to a worker)")
    endpoint = settings.skypilot_api_server_endpoint.rstrip("/")
    return await _http("skypilot", "GET", f"{endpoint}/api/health", {})


async def _sandbox(settings: Settings) -> Check:
    """Whether the local backend's sandbox starts here (it runs `bwrap ... true`)."""
    if settings.backend is not Backend.LOCAL:
        return Check("sandbox", "off", f"SKYRUN_BACKEND={settings.backend.value}: no local jobs")
    if not settings.local_sandbox:
        return Check(
            "sandbox", "off", "SKYRUN_LOCAL_SANDBOX=off: local jobs can read the worker's secrets"
        )
    from worker.backends.local import LocalBackend
    from worker.backends.sandbox import SandboxUnavailable

    try:
        await LocalBackend.from_settings(settings).check_sandbox()
    except SandboxUnavailable as err:
        return Check("sandbox", "FAIL", str(err))
    return Check("sandbox", "ok", "local jobs run in a bubblewrap sandbox")


async def run_checks(settings: Settings) -> list[Check]:
    return [
        await _temporal(settings),
        await _github(settings),
        await _slack(settings),
        await _skypilot(settings),
        await _sandbox(settings),
        Check(
            "webhook",
            "ok" if settings.github_webhook_secret else "off",
            "GITHUB_WEBHOOK_SECRET set"
            if settings.github_webhook_secret
            else "GITHUB_WEBHOOK_SECRET not set: /github/webhook refuses everything",
        ),
    ]


async def run_check(settings: Settings) -> int:
    checks = await run_checks(settings)
    for check in checks:
        print(f"{check.name:<10} {check.status:<5} {check.detail}")
    return 1 if any(c.status == "FAIL" for c in checks) else 0
