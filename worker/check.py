"""`skyrun check`: what is configured, and whether each configured credential really works.

Every credential is tried against its API (for a GitHub App: the App's JWT, its installations, an
installation token minted), and a failure names the setting to fix. Checks run concurrently,
each bounded in time; blocking clients run in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
from github.GithubException import GithubException
from requests import RequestException
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from worker.github.auth import ClientOptions, GitHubAuth
from worker.settings import Backend, Settings
from worker.temporal import connect

CHECK_TIMEOUT_S = 8.0
"""The longest any one check may take (they run at once, so this bounds `skyrun check`)."""
REQUEST_TIMEOUT_S = 3
"""Per HTTP request; a GitHub App's check makes three."""
GITHUB_CHECK_OPTIONS = ClientOptions(
    seconds_between_requests=0, seconds_between_writes=0, retries=0, timeout_s=REQUEST_TIMEOUT_S
)

MAX_ERROR = 200
OK, FAIL, OFF = "ok", "FAIL", "off"

E_TIMED_OUT = "no answer within {seconds:g} s{hint}"
E_TEMPORAL_REFUSED = (
    "{target} refused the credentials ({status}): check TEMPORAL_API_KEY, or the TLS client "
    "certificate (TEMPORAL_TLS_CERT_PATH, TEMPORAL_TLS_KEY_PATH)"
)
E_TEMPORAL_NAMESPACE = "{target} has no namespace {namespace!r}: check TEMPORAL_NAMESPACE"
E_TEMPORAL_UNREACHABLE = "{target}: {error}; check TEMPORAL_ADDRESS (is the server running?)"
E_TEMPORAL_TLS_FILE = (
    "{path}: {reason}; check TEMPORAL_TLS_CERT_PATH, TEMPORAL_TLS_KEY_PATH and TEMPORAL_TLS_CA_PATH"
)
TEMPORAL_HINT = ": check TEMPORAL_ADDRESS (is the server running?)"
TEMPORAL_OK = "{target} namespace {namespace}"

GITHUB_OFF = "no GITHUB_TOKEN or GitHub App (GITHUB_APP_ID)"
GITHUB_TOKEN_UNUSED = " (not used: GITHUB_APP_ID is set, so the GitHub App is)"
E_GITHUB_ANSWERED = "{api} answered {status} {said}: check GITHUB_API_URL, or try again later"
E_GITHUB_UNREACHABLE = "{api}: {error}; check GITHUB_API_URL"
GITHUB_HINT = ": check GITHUB_API_URL"

SLACK_OFF = "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET not both set"
SLACK_HALF = "{present} is set but {missing} is not: Slack stays off until both are"
SLACK_OK = "SLACK_BOT_TOKEN accepted by {url}: bot {user} in workspace {team}"
SLACK_REFUSALS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
E_SLACK_REFUSED = (
    "SLACK_BOT_TOKEN was refused by {url} ({error}): set it to the app's Bot User OAuth Token "
    "(xoxb-…, OAuth & Permissions)"
)
E_SLACK_ERROR = "{url} answered {error}: check SLACK_BOT_TOKEN and SLACK_API_URL"
E_SLACK_NOT_SLACK = "{url} answered HTTP {status}, not Slack's JSON: check SLACK_API_URL"
E_HTTP_UNREACHABLE = "{url}: {error}"

SKYPILOT_CHECK_TIMEOUT_S = 20.0
"""The SkyPilot check imports the SDK (seconds), which retries a silent server (3 x 2.5 s)."""
SKYPILOT_LOCAL = "SKYRUN_BACKEND=local: tasks run on this machine"
SKYPILOT_NO_SERVER = "SDK in the worker, no API server (runs pinned to a worker)"
SKYPILOT_OK = "{endpoint}: SkyPilot {version} API server{who}"
E_SKYPILOT_NEEDS_AUTH = (
    "{endpoint} wants a login: run `sky api login -e {endpoint}` as the worker's user, or set "
    "SKYPILOT_SERVICE_ACCOUNT_TOKEN"
)
E_SKYPILOT_VERSION = "{endpoint}: {error}"
E_SKYPILOT_UNHEALTHY = (
    "{endpoint} did not answer as a SkyPilot API server: check SKYPILOT_API_SERVER_ENDPOINT"
)
E_SKYPILOT_MISSING = "SKYRUN_BACKEND=skypilot but SkyPilot is not installed here: {error}"
SKYPILOT_HINT = ": check SKYPILOT_API_SERVER_ENDPOINT"
WEBHOOK_OK = "GITHUB_WEBHOOK_SECRET set"
WEBHOOK_OFF = "GITHUB_WEBHOOK_SECRET not set: /github/webhook refuses everything"


@dataclass
class Check:
    name: str
    status: str  # "ok", "FAIL" or "off"
    detail: str


def _describe(err: BaseException) -> str:
    """The gist of an error: the OS's words when a transport buried them, bounded."""
    text = str(err)
    buried = re.search(r'message: "([^"]+)"', text)
    if buried:
        return buried[1]
    text = text[:MAX_ERROR]
    return f"{err.__class__.__name__}: {text}" if text else err.__class__.__name__


async def _bounded(
    name: str, check: Awaitable[Check], hint: str = "", seconds: float = CHECK_TIMEOUT_S
) -> Check:
    try:
        return await asyncio.wait_for(check, seconds)
    except TimeoutError:
        return Check(name, FAIL, E_TIMED_OUT.format(seconds=seconds, hint=hint))


async def _temporal(settings: Settings) -> Check:
    target, namespace = settings.temporal_target, settings.temporal_namespace
    try:
        client = await connect(settings)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace),
            timeout=timedelta(seconds=REQUEST_TIMEOUT_S),
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            detail = E_TEMPORAL_REFUSED.format(target=target, status=err.status.name)
        elif err.status is RPCStatusCode.NOT_FOUND:
            detail = E_TEMPORAL_NAMESPACE.format(target=target, namespace=namespace)
        else:
            detail = E_TEMPORAL_UNREACHABLE.format(target=target, error=_describe(err))
        return Check("temporal", FAIL, detail)
    except OSError as err:  # a TLS file that cannot be read
        reason = err.strerror or _describe(err)
        return Check("temporal", FAIL, E_TEMPORAL_TLS_FILE.format(path=err.filename, reason=reason))
    except Exception as err:  # any failure is reported, not raised
        return Check(
            "temporal", FAIL, E_TEMPORAL_UNREACHABLE.format(target=target, error=_describe(err))
        )
    return Check("temporal", OK, TEMPORAL_OK.format(target=target, namespace=namespace))


async def _github_call(name: str, api: str, prove: Callable[[], str]) -> Check:
    """Run a blocking proof of a GitHub credential in a thread, and say what came of it."""
    try:
        return Check(name, OK, await asyncio.to_thread(prove))
    except ApplicationError as err:  # a credential error, naming its setting
        return Check(name, FAIL, err.message)
    except GithubException as err:
        data = err.data if isinstance(err.data, dict) else {}
        said = " ".join(str(data.get("message") or "").split())[:200]
        return Check(name, FAIL, E_GITHUB_ANSWERED.format(api=api, status=err.status, said=said))
    except (RequestException, OSError) as err:
        return Check(name, FAIL, E_GITHUB_UNREACHABLE.format(api=api, error=_describe(err)))


async def _github_token(settings: Settings) -> Check:
    if settings.github_token is None:
        return Check("github", OFF, GITHUB_OFF)
    auth = GitHubAuth(settings.model_copy(update={"github_app_id": None}), GITHUB_CHECK_OPTIONS)
    check = await _github_call("github", auth.api_url, auth.verify_token)
    if settings.github_app_id:
        check.detail += GITHUB_TOKEN_UNUSED
    return check


async def _github_app(settings: Settings) -> Check:
    try:
        auth = GitHubAuth(settings, GITHUB_CHECK_OPTIONS)
    except ValueError as err:  # GITHUB_APP_ID without a key
        return Check("github app", FAIL, str(err))
    return await _github_call("github app", auth.api_url, auth.verify_app)


async def _slack(settings: Settings) -> Check:
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        names = {
            "SLACK_BOT_TOKEN": settings.slack_bot_token,
            "SLACK_SIGNING_SECRET": settings.slack_signing_secret,
        }
        present = [name for name, value in names.items() if value is not None]
        if not present:
            return Check("slack", OFF, SLACK_OFF)
        (missing,) = (name for name, value in names.items() if value is None)
        return Check("slack", OFF, SLACK_HALF.format(present=present[0], missing=missing))
    token = settings.slack_bot_token.get_secret_value()
    url = settings.slack_api_url.rstrip("/") + "/auth.test"
    try:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
            response = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        answer = response.json()
    except httpx.HTTPError as err:
        return Check("slack", FAIL, E_HTTP_UNREACHABLE.format(url=url, error=_describe(err)))
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer:
        return Check("slack", FAIL, E_SLACK_NOT_SLACK.format(url=url, status=response.status_code))
    if answer["ok"] is True:
        user, team = answer.get("user") or answer.get("user_id"), answer.get("team")
        return Check("slack", OK, SLACK_OK.format(url=url, user=user, team=team))
    error = str(answer.get("error") or "an error")[:100]
    template = E_SLACK_REFUSED if error in SLACK_REFUSALS else E_SLACK_ERROR
    return Check("slack", FAIL, template.format(url=url, error=error))


def _skypilot_status(endpoint: str) -> Check:
    """Ask the API server as the worker's SDK will: with its login (cookie or service account)."""
    try:
        from sky.server import common  # lazy on purpose: slow, and only this check needs it
    except ImportError as err:
        return Check("skypilot", FAIL, E_SKYPILOT_MISSING.format(error=err))
    info = common.get_api_server_status(endpoint)
    status = info.status
    if status is common.ApiServerStatus.HEALTHY:
        name = (info.user or {}).get("name")
        who = f", as {name}" if name else ""
        return Check(
            "skypilot", OK, SKYPILOT_OK.format(endpoint=endpoint, version=info.version, who=who)
        )
    if status is common.ApiServerStatus.NEEDS_AUTH:
        return Check("skypilot", FAIL, E_SKYPILOT_NEEDS_AUTH.format(endpoint=endpoint))
    if status is common.ApiServerStatus.VERSION_MISMATCH:
        error = " ".join(str(info.error or status.value).split())[:MAX_ERROR]
        return Check("skypilot", FAIL, E_SKYPILOT_VERSION.format(endpoint=endpoint, error=error))
    return Check("skypilot", FAIL, E_SKYPILOT_UNHEALTHY.format(endpoint=endpoint))


async def _skypilot(settings: Settings) -> Check:
    if settings.backend is Backend.LOCAL:
        return Check("skypilot", OFF, SKYPILOT_LOCAL)
    if not settings.skypilot_api_server_endpoint:
        return Check("skypilot", OK, SKYPILOT_NO_SERVER)
    endpoint = settings.skypilot_api_server_endpoint.rstrip("/")
    return await asyncio.to_thread(_skypilot_status, endpoint)


async def _webhook(settings: Settings) -> Check:
    if settings.github_webhook_secret:
        return Check("webhook", OK, "GITHUB_WEBHOOK_SECRET set")
    return Check(
        "webhook", OFF, "GITHUB_WEBHOOK_SECRET not set: /github/webhook refuses everything"
    )


async def _sandbox(settings: Settings) -> Check:
    """Whether the local backend's sandbox starts here (it runs `bwrap ... true`)."""
    if settings.backend is not Backend.LOCAL:
        return Check("sandbox", OFF, f"SKYRUN_BACKEND={settings.backend.value}: no local jobs")
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
    """Every check, at once; the order of the list is the order they are printed in."""
    checks: list[Awaitable[Check]] = [_bounded("temporal", _temporal(settings), TEMPORAL_HINT)]
    if settings.github_token is not None or not settings.github_app_id:
        checks.append(_bounded("github", _github_token(settings), GITHUB_HINT))
    if settings.github_app_id:
        checks.append(_bounded("github app", _github_app(settings), GITHUB_HINT))
    checks += [
        _bounded("slack", _slack(settings)),
        _bounded("skypilot", _skypilot(settings), SKYPILOT_HINT, SKYPILOT_CHECK_TIMEOUT_S),
        _bounded("sandbox", _sandbox(settings)),
        _webhook(settings),
    ]
    return list(await asyncio.gather(*checks))


async def run_check(settings: Settings) -> int:
    checks = await run_checks(settings)
    for check in checks:
        print(f"{check.name:<10} {check.status:<5} {check.detail}")
    return 1 if any(c.status == FAIL for c in checks) else 0
