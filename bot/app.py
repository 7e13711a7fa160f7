"""The bot's Starlette app: the front door only (verify, parse, start/cancel/query, serve pages)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.client import Client

from bot import metrics
from bot.github import webhook as github_webhook
from bot.pages import routes as run_pages
from bot.state import BotState
from worker.logstore import LogStore
from worker.probes import temporal_readiness
from worker.runcontrol import RunControl
from worker.settings import Settings
from worker.temporal import connect


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> JSONResponse:
    state: BotState = request.app.state.bot
    return await temporal_readiness(state.client)


SLACK_PATH = "/slack/events"
"""bot/slack/app.py's PATH, known here so a server without Slack never imports Bolt."""


async def slack_off(request: Request) -> Response:
    """`POST /slack/events` on a server without Slack: bot/slack/app.py's answer, loaded only
    when someone asks."""
    from bot.slack import app as slack_app

    return await slack_app.slack_off(request)


def slack_routes(settings: Settings) -> list[BaseRoute]:
    """The Slack front door; Bolt (slow to import) is loaded only when Slack is configured."""
    if not settings.slack_configured:
        return [Route(SLACK_PATH, slack_off, methods=["POST"])]
    from bot.slack import app as slack_app

    return slack_app.routes(settings)


def create_app(settings: Settings, client: Client | None = None) -> Starlette:
    """Build the bot; without an injected client it connects to Temporal lazily at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        temporal = client or await connect(settings, lazy=True)
        app.state.bot = BotState(
            settings=settings,
            client=temporal,
            control=RunControl(temporal, settings.temporal_task_queue),
            logs=LogStore(settings.logs_dir),
        )
        yield

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *run_pages.routes(settings),
        *github_webhook.routes(settings),
        *slack_routes(settings),
        *metrics.routes(),
    ]
    middleware = [Middleware(metrics.RequestMetrics)]
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
