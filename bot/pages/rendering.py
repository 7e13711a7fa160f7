"""HTML responses: templates and Markdown (loaded on first render), filters, paths, headers."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from bot.pages.texts import TRIGGER_LABELS
from bot.pages.views import PART_TITLES, iso_time, repo_name
from worker.contract import RunState
from worker.costview import format_usd
from worker.formatting import (
    format_change,
    format_duration,
    format_number,
    format_recoveries,
    format_time,
)

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markupsafe import Markup
    from starlette.templating import Jinja2Templates

BOT_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = BOT_DIR / "templates"
STATIC_DIR = BOT_DIR / "static"
SECURITY_HEADERS = {
    # Reports are user Markdown (raw HTML is escaped); the policy is a second fence.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@functools.cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False})


def render_markdown(text: str) -> Markup:
    """A task's report as HTML; raw HTML in it is escaped and unsafe link schemes are dropped."""
    from markupsafe import Markup

    return Markup(_markdown().render(text))


def metric_change(value: float, base: float | None) -> str:
    """A metric's change against its baseline value, as every surface writes it."""
    return "" if base is None else format_change(value, base)


@functools.cache
def templates() -> Jinja2Templates:
    """The page templates with their filters; Jinja is imported on the first call."""
    from starlette.templating import Jinja2Templates

    loaded = Jinja2Templates(directory=str(TEMPLATES_DIR))
    loaded.env.filters.update(
        markdown=render_markdown,
        duration=format_duration,
        number=format_number,
        change=metric_change,
        when=format_time,
        iso=iso_time,
        repo_name=repo_name,
        recoveries=format_recoveries,
        usd=format_usd,
    )
    loaded.env.globals["part_titles"] = PART_TITLES
    return loaded


@functools.cache
def asset_version() -> str:
    """A digest of the static files, so a new release's CSS and JS are not served from cache."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.glob("*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


@dataclass
class Paths:
    """Links inside the pages: root-relative, so they work from whatever host served the page
    (worker/links.py's `Links` makes the absolute URLs posted elsewhere and put in the JSON)."""

    root: str = ""

    def runs(self, **filters: Any) -> str:
        query = urlencode({k: v for k, v in filters.items() if v not in (None, "")})
        return f"{self.root}/runs" + (f"?{query}" if query else "")

    def run(self, run_id: str) -> str:
        return f"{self.root}/runs/{quote(run_id, safe='')}"

    def log(self, run_id: str, stage: str) -> str:
        return f"{self.run(run_id)}/logs/{quote(stage, safe='')}"

    def api(self, run_id: str) -> str:
        return f"{self.root}/api/runs/{quote(run_id, safe='')}"

    def static(self, name: str, version: str) -> str:
        return f"{self.root}/static/{name}?v={version}"


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """Template `name` as an HTML response, with what every page's layout uses."""
    context.update(
        paths=Paths(request.scope.get("root_path", "")),
        asset_version=asset_version(),
        states=[s.value for s in RunState],
        triggers=TRIGGER_LABELS,
    )
    return templates().TemplateResponse(
        request, name, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def render_error(request: Request, status: int, message: str, hint: str = "") -> Response:
    return render(
        request, "error.html", {"status": status, "message": message, "hint": hint}, status
    )
