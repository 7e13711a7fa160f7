"""Run pages, logs and their JSON twins: read-only views over Temporal visibility and queries."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from bot.dispatch import RunSummary
from bot.state import BotState
from worker.contract import RunProgress, RunState, Trigger
from worker.links import Links
from worker.logparse import strip_ansi
from worker.settings import Settings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
UNKNOWN_RUN = "no run with id {run_id}"
UNKNOWN_LOG = "no log for stage {stage} of run {run_id}"
PAGES_OFF = "run pages are turned off on this server (SKYRUN_RUN_PAGES=false)"
FILTERS = ("repo", "ref", "pr", "state", "trigger")


def _state(request: Request) -> BotState:
    state: BotState = request.app.state.bot
    return state


def _filters(request: Request) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in FILTERS:
        value = request.query_params.get(name, "").strip()
        if not value:
            continue
        if name == "pr":
            if not value.isdigit():
                raise HTTPException(400, "pr must be a number")
            filters[name] = int(value)
        elif name == "state" and value not in {s.value for s in RunState}:
            raise HTTPException(400, f"unknown state {value!r}")
        elif name == "trigger" and value not in {t.value for t in Trigger}:
            raise HTTPException(400, f"unknown trigger {value!r}")
        else:
            filters[name] = value
    return filters


def summary_json(summary: RunSummary, links: Links) -> dict[str, Any]:
    data = dataclasses.asdict(summary)
    data["started_at"] = summary.started_at.isoformat() if summary.started_at else None
    data["finished_at"] = summary.finished_at.isoformat() if summary.finished_at else None
    data["duration_s"] = summary.duration_s
    data["url"] = links.run(summary.run_id)
    return data


def progress_json(progress: RunProgress, links: Links) -> dict[str, Any]:
    data = dataclasses.asdict(progress)
    data["metrics"] = progress.metrics
    data["links"] = {"page": links.run(progress.run_id), "temporal": links.temporal(progress.run_id)}
    for stage in data["stages"]:
        stage["log_url"] = links.log(progress.run_id, stage["name"])
    return data


async def _load(request: Request) -> tuple[BotState, RunProgress]:
    state = _state(request)
    run_id = request.path_params["run_id"]
    progress = await state.dispatcher.progress(run_id)
    if progress is None:
        raise HTTPException(404, UNKNOWN_RUN.format(run_id=run_id))
    return state, progress


async def api_runs(request: Request) -> JSONResponse:
    state = _state(request)
    links = Links(state.settings)
    runs = await state.dispatcher.list_runs(limit=100, **_filters(request))
    return JSONResponse({"runs": [summary_json(s, links) for s in runs]})


async def api_run(request: Request) -> JSONResponse:
    state, progress = await _load(request)
    return JSONResponse(progress_json(progress, Links(state.settings)))


async def runs_page(request: Request) -> Response:
    state = _state(request)
    filters = _filters(request)
    runs = await state.dispatcher.list_runs(limit=100, **filters)
    return TEMPLATES.TemplateResponse(
        request, "runs.html", {"runs": runs, "filters": filters, "links": Links(state.settings)}
    )


async def run_page(request: Request) -> Response:
    state, progress = await _load(request)
    return TEMPLATES.TemplateResponse(
        request, "run.html", {"run": progress, "links": Links(state.settings)}
    )


async def stage_log(request: Request) -> PlainTextResponse:
    state = _state(request)
    run_id, stage = request.path_params["run_id"], request.path_params["stage"]
    if not state.logs.exists(run_id, stage):
        raise HTTPException(404, UNKNOWN_LOG.format(stage=stage, run_id=run_id))
    return PlainTextResponse(strip_ansi(state.logs.read_text(run_id, stage)))


async def pages_off(request: Request) -> PlainTextResponse:
    return PlainTextResponse(PAGES_OFF, status_code=404)


def routes(settings: Settings) -> list[BaseRoute]:
    paths = (
        ("/runs", runs_page),
        ("/runs/{run_id}", run_page),
        ("/runs/{run_id}/logs/{stage}", stage_log),
        ("/api/runs", api_runs),
        ("/api/runs/{run_id}", api_run),
    )
    if not settings.run_pages:
        return [Route(path, pages_off) for path, _ in paths]
    return [Route(path, endpoint) for path, endpoint in paths]
