"""Helpers of the Slack front-door tests (also used by tests/worker/slack): serve an app, read
back what a run was started with, read an acknowledgement, clean up."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from worker.contract import RunRequest
from worker.runcontrol import RunControl


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot.test") as http:
            yield http


async def terminate_runs(client: Client, repo: str) -> None:
    for summary in await RunControl(client, "").list_runs(repo=repo, running_only=True):
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(summary.run_id).terminate("test over")


async def started_request(client: Client, run_id: str) -> RunRequest:
    """The RunRequest a run was started with, read back from its history."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    event = history.events[0]
    assert event.event_type is EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    payloads = event.workflow_execution_started_event_attributes.input.payloads
    [request] = await client.data_converter.decode(payloads, [RunRequest])
    assert isinstance(request, RunRequest)
    return request


def ack_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return str(body["text"])
