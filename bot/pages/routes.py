"""The pages' Starlette routes: runs list, run page, their JSON, stage logs and static files."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bot.pages.filters import FilterError, parse_filters, shown_filters
from bot.pages.loading import PAGE_SIZE, TEMPORAL_ERRORS, Loader
from bot.pages.logs import StageLogs
from bot.pages.rendering import STATIC_DIR, render, render_error
from bot.pages.texts import PAGES_OFF, TEMPORAL_DOWN, UNKNOWN_RUN, UNKNOWN_RUN_HINT
from bot.pages.views import row_json, view_json
from bot.state import BotState
from worker.settings import Settings

RUN_POLL_MS = 2000
LIST_POLL_MS = 5000


def _state(request: Request) -> BotState:
    state: BotState = request.app.state.bot
    return state


class RunPages:
    """The list and run endpoints, HTML and JSON, over one loader."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    async def runs_page(self, request: Request) -> Response:
        try:
            filters = parse_filters(request.query_params)
        except FilterError as err:
            return render_error(request, 400, str(err))
        try:
            rows = await self.loader.rows(_state(request), filters)
        except TEMPORAL_ERRORS as err:
            return render_error(request, 503, TEMPORAL_DOWN.format(error=err))
        shown = shown_filters(filters)
        fragment = request.query_params.get("fragment") == "1"
        return render(
            request,
            "runs_table.html" if fragment else "runs.html",
            {
                "rows": rows,
                "filters": shown,
                "live": any(row.live for row in rows),
                "fragment_query": urlencode({**shown, "fragment": "1"}),
                "poll_ms": LIST_POLL_MS,
                "page_size": PAGE_SIZE,
            },
        )

    async def api_runs(self, request: Request) -> JSONResponse:
        try:
            filters = parse_filters(request.query_params)
        except FilterError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        try:
            rows = await self.loader.rows(_state(request), filters)
        except TEMPORAL_ERRORS as err:
            return JSONResponse({"error": TEMPORAL_DOWN.format(error=err)}, 503)
        return JSONResponse({"runs": [row_json(row, self.loader.links) for row in rows]})

    async def run_page(self, request: Request) -> Response:
        state = _state(request)
        run_id = request.path_params["run_id"]
        try:
            progress, notice = await self.loader.load(state, run_id)
        except TEMPORAL_ERRORS as err:
            return render_error(request, 503, TEMPORAL_DOWN.format(error=err))
        if progress is None:
            return render_error(request, 404, UNKNOWN_RUN.format(run_id=run_id), UNKNOWN_RUN_HINT)
        view = await self.loader.view(state, progress, notice)
        fragment = request.query_params.get("fragment") == "1"
        return render(
            request,
            "run_body.html" if fragment else "run.html",
            {"view": view, "run": view.run, "poll_ms": RUN_POLL_MS},
        )

    async def api_run(self, request: Request) -> JSONResponse:
        state = _state(request)
        run_id = request.path_params["run_id"]
        try:
            progress, notice = await self.loader.load(state, run_id)
        except TEMPORAL_ERRORS as err:
            return JSONResponse({"error": TEMPORAL_DOWN.format(error=err)}, 503)
        if progress is None:
            return JSONResponse({"error": UNKNOWN_RUN.format(run_id=run_id)}, status_code=404)
        view = await self.loader.view(state, progress, notice)
        return JSONResponse(view_json(view, self.loader.links))


async def pages_off(request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": PAGES_OFF}, status_code=404)
    return PlainTextResponse(PAGES_OFF, status_code=404)


def routes(settings: Settings) -> list[BaseRoute]:
    """The pages' routes; with SKYRUN_RUN_PAGES=false the same paths answer 404 saying so."""
    loader = Loader(settings)
    pages = RunPages(loader)
    logs = StageLogs(loader.masker, loader.stage_live)
    paths = (
        ("/runs", pages.runs_page),
        ("/runs/{run_id}", pages.run_page),
        ("/runs/{run_id}/logs/{stage}", logs.endpoint),
        ("/api/runs", pages.api_runs),
        ("/api/runs/{run_id}", pages.api_run),
    )
    if not settings.run_pages:
        return [Route(path, pages_off) for path, _ in paths]
    return [
        *(Route(path, endpoint) for path, endpoint in paths),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
