"""Serving the bot with uvicorn, alone (`skyrun bot`) or inside `skyrun dev`."""

from __future__ import annotations

import uvicorn
from temporalio.client import Client

from bot.app import create_app
from worker.settings import Settings


def uvicorn_config(settings: Settings, client: Client | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, client),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        lifespan="on",
    )


def serve_bot(settings: Settings) -> int:
    server = uvicorn.Server(uvicorn_config(settings))
    server.run()
    return 0 if server.started else 1
