"""The whole GitHub path in one process: fake GitHub, the bot app, a real worker, real Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowFailureError

from bot.app import create_app
from tests.fakes.github import FakeComment, FakeGitHub, deliver
from worker.contract import RunProgress
from worker.github.auth import ClientOptions
from worker.github.models import CommandResult, DispatchOutput
from worker.github.service import make_github
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

SECRET = "webhook-secret-for-tests"
REPO = "acme/ml"
"""The repository the `fake` fixture (conftest.py) holds."""
PIPELINE = {
    ".skyrun.yaml": (
        "on: {push: [main]}\n"
        "stages:\n  - {name: prepare, task: prepare.yaml}\n  - {name: train, task: train.yaml}\n"
    ),
    "prepare.yaml": "run: echo preparing\n",
    "train.yaml": "run: |\n  echo training\n  echo '::metric accuracy=0.75'\n",
}
SLOW_TRAIN = "run: |\n  echo started\n  sleep 300\n"


def unique_repo(owner: str = "acme") -> str:
    """Runs are listed across the shared Temporal server: every test gets its own repository."""
    return f"{owner}/ml-{uuid.uuid4().hex[:8]}"


@dataclass
class Stack:
    fake: FakeGitHub
    settings: Settings
    client: Client
    http: httpx.AsyncClient
    control: RunControl

    async def deliver(self, event: str, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await deliver(self.http, event, payload, secret=SECRET, **kwargs)

    async def dispatched(self, response: httpx.Response) -> DispatchOutput:
        """What the worker did with an accepted push or pull_request delivery."""
        assert response.status_code == 202, response.text
        handle = self.client.get_workflow_handle(
            response.json()["workflow_id"], result_type=DispatchOutput
        )
        return await asyncio.wait_for(handle.result(), 60)

    async def push(self, repo: str, branch: str, sha: str, *, user: str = "alice") -> str:
        """Deliver a push; the run id it started."""
        payload = self.fake.push_payload(repo, f"refs/heads/{branch}", sha, sender=user)
        dispatched = await self.dispatched(await self.deliver("push", payload))
        assert dispatched.started, dispatched
        return dispatched.run_id

    async def command(self, comment: FakeComment, **kwargs: Any) -> CommandResult:
        """Deliver a comment and wait until its command workflow is done."""
        response = await self.deliver("issue_comment", self.fake.comment_payload(comment), **kwargs)
        return await self.commanded(response)

    async def commanded(self, response: httpx.Response) -> CommandResult:
        """What the worker did with an accepted command (a comment, a check run's button)."""
        assert response.status_code == 202, response.text
        handle = self.client.get_workflow_handle(
            response.json()["workflow_id"], result_type=CommandResult
        )
        return await asyncio.wait_for(handle.result(), 60)

    async def finished(self, run_id: str, timeout: float = 120) -> RunProgress:
        """Wait for the run to close (final reports included) and return its progress."""
        with contextlib.suppress(WorkflowFailureError):
            await asyncio.wait_for(self.client.get_workflow_handle(run_id).result(), timeout)
        progress = await self.control.progress(run_id)
        assert progress is not None
        return progress


@contextlib.asynccontextmanager
async def github_stack(
    client: Client,
    make_settings: Callable[..., Settings],
    root: Path,
    *,
    worker: bool = True,
    app_id: str | None = None,
    **overrides: object,
) -> AsyncIterator[Stack]:
    """The stack; with `app_id` the worker is a GitHub App (installation tokens), else a token."""
    with FakeGitHub(root / "github") as fake:
        values: dict[str, object] = {
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_TOKEN": fake.token,
            "GITHUB_API_URL": fake.url,
        }
        if app_id is not None:
            values.update(
                GITHUB_TOKEN=None,
                GITHUB_APP_ID=app_id,
                GITHUB_APP_PRIVATE_KEY=fake.enable_app(app_id),
            )
        values.update(overrides)
        settings = make_settings(**values)
        app = create_app(settings, client)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bot.test") as http,
        ):
            stack = Stack(
                fake, settings, client, http, RunControl(client, settings.temporal_task_queue)
            )
            if not worker:
                yield stack
                return
            github = make_github(settings, client, ClientOptions.unpaced())
            async with running_workers(build_workers(client, settings, github=github)):
                yield stack
