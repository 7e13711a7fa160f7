"""The bot's app: what `skyrun bot` imports before it serves, and the Slack door it mounts."""

from __future__ import annotations

import subprocess
import sys

import httpx
from starlette.routing import Route

from bot.app import SLACK_PATH, create_app, slack_routes
from worker.settings import load_settings

DEFERRED = ("jinja2", "markdown_it", "slack_bolt", "slack_sdk", "sky")
PROBE = (
    "import sys\n"
    "from bot.server import uvicorn_config\n"
    "from worker.settings import load_settings\n"
    "uvicorn_config(load_settings(_env_file=None))\n"
    f"print(' '.join(m for m in {DEFERRED!r} if m in sys.modules) or '-')\n"
)
SLACK = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "test-signing-secret"}


def loaded_by_the_bot(**env: str) -> str:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=clean, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_the_bot_starts_without_jinja_markdown_slack_or_sky() -> None:
    assert loaded_by_the_bot() == "-"


def test_bolt_is_loaded_when_slack_is_configured() -> None:
    assert loaded_by_the_bot(**SLACK) == "slack_bolt slack_sdk"


def test_slack_path_is_the_slack_front_doors() -> None:
    from bot.slack import app as slack_app

    assert SLACK_PATH == slack_app.PATH
    configured = slack_routes(load_settings(_env_file=None, **SLACK))
    assert [r.path for r in configured if isinstance(r, Route)] == [SLACK_PATH]


async def test_without_slack_its_path_says_how_to_turn_it_on() -> None:
    from bot.slack import app as slack_app

    app = create_app(load_settings(_env_file=None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        response = await http.post(SLACK_PATH, content=b"x")
        assert (response.status_code, response.text) == (404, slack_app.SLACK_OFF)
        assert (await http.get(SLACK_PATH)).status_code == 405
