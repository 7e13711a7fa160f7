"""Run pages, logs and their JSON: real runs on the session's Temporal server, local backend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from markupsafe import escape
from starlette.applications import Starlette
from temporalio.client import Client

from bot.app import create_app
from bot.runs import (
    BAD_PR,
    DETAILS_UNAVAILABLE,
    PAGES_OFF,
    QUERY_TIMED_OUT,
    UNKNOWN_LOG,
    UNKNOWN_RUN,
    FilterError,
    base_ref,
    build_view,
    format_duration,
    parse_filters,
    progress_from_summary,
    read_tail,
    render_markdown,
)
from bot.server import EmbeddedServer
from tests.runs import clusters_left, request_for, wait_finished, wait_stage_running
from worker.contract import RunProgress, RunRequest, RunState, StageProgress, StageState, Trigger
from worker.links import GitHubHost, Links
from worker.logstore import LogStore
from worker.masking import Masker
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl, RunSummary, runs_query
from worker.settings import Settings, load_settings

# A pipeline whose `train` stage runs until the test opens its gate (creates a file).
GATED_PIPELINE = """\
stages:
  - {name: prep, task: prep.yaml}
  - {name: train, task: train.yaml, cluster: gpu}
"""
PREP_TASK = """\
run: |
  printf '\\033[32mready\\033[0m\\n'
  echo '::metric samples=10'
"""
TRAIN_TASK = """\
run: |
  echo waiting for the gate
  printf '\\033[1;34mepoch 1\\033[0m\\n'
  while [ ! -e {gate} ]; do sleep 0.05; done
  echo gate open
  echo '::metric accuracy=0.75'
  echo '::report'
  echo '| split | accuracy |'
  echo '| --- | ---: |'
  echo '| test | 75% |'
  echo '<script>alert(1)</script>'
  echo '::endreport'
"""
FAILING_PIPELINE = {
    "a.yaml": "run: echo preparing\n",
    "b.yaml": "run: |\n  echo about to fail\n  echo 'Traceback: boom' >&2\n  exit 3\n",
    "c.yaml": "run: echo never\n",
    ".skyrun.yaml": (
        "stages:\n  - {name: a, task: a.yaml}\n  - {name: b, task: b.yaml, cluster: shared}\n"
        "  - {name: c, task: c.yaml, cluster: shared}\n"
    ),
}
GITHUB_REPO = "acme/mock-training"
ANSI = "\x1b"


@dataclass
class Stack:
    settings: Settings
    control: RunControl
    http: httpx.AsyncClient
    app: Starlette


@contextlib.asynccontextmanager
async def bot_stack(client: Client, settings: Settings) -> AsyncIterator[Stack]:
    """Workers on the test's queue and the bot app, called in-process through ASGI."""
    async with running_workers(build_workers(client, settings)):
        app = create_app(settings, client)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://skyrun.test"
            ) as http,
        ):
            yield Stack(settings, RunControl(client, settings.temporal_task_queue), http, app)


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """Serve the app with uvicorn on a free local port (streaming and browsers need real HTTP)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = EmbeddedServer(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise AssertionError("uvicorn did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def gated_files(gate: Path) -> dict[str, str]:
    return {
        ".skyrun.yaml": GATED_PIPELINE,
        "prep.yaml": PREP_TASK,
        "train.yaml": TRAIN_TASK.format(gate=gate),
    }


def github_request(path: Path, **fields: object) -> RunRequest:
    """A push-triggered run of a local repository that the pages show as a GitHub one."""
    request = request_for(path, trigger=Trigger.PUSH, requested_by="alice", **fields)
    request.repo = GITHUB_REPO
    return request


async def wait_for(predicate: Callable[[], object], timeout: float = 30) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def stack(client: Client, settings: Settings) -> AsyncIterator[Stack]:
    async with bot_stack(client, settings) as running:
        yield running


# Pure parts: no Temporal needed.


def test_markdown_reports_escape_raw_html_and_unsafe_links() -> None:
    html = render_markdown(
        "| a | b |\n| --- | ---: |\n| 1 | 2 |\n\n<script>alert(1)</script>\n\n"
        "[x](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    assert "<table>" in html and '<td style="text-align:right">2</td>' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and 'href="javascript:' not in html


def test_filters_are_checked_and_live_states_only_match_open_runs() -> None:
    assert parse_filters({"repo": " acme/x ", "pr": "7", "ref": ""}) == {"repo": "acme/x", "pr": 7}
    assert parse_filters({"state": "running"}) == {"state": "running", "running_only": True}
    assert parse_filters({"state": "failed"}) == {"state": "failed"}
    with pytest.raises(FilterError, match=re.escape(BAD_PR.format(value="x"))):
        parse_filters({"pr": "x"})
    with pytest.raises(FilterError, match="unknown trigger 'fax'"):
        parse_filters({"trigger": "fax"})
    assert runs_query(repo="a/b", task_queue="q'1").endswith(
        "SkyrunRepo = 'a/b' AND TaskQueue = 'q\\'1'"
    )


def test_durations_read_like_a_person_wrote_them() -> None:
    assert [format_duration(s) for s in (None, 3.21, 42, 185, 7322)] == [
        "—",
        "3.2 s",
        "42 s",
        "3 min 05 s",
        "2 h 02 min",
    ]


def test_view_of_a_live_stage_uses_the_log_store_tail_and_the_elapsed_time() -> None:
    progress = RunProgress(
        run_id="r-1",
        repo=GITHUB_REPO,
        ref="main",
        commit="a" * 40,
        trigger=Trigger.COMMENT,
        requested_by="alice",
        state=RunState.RUNNING,
        started_at="2026-01-01T00:00:00+00:00",
        pr_number=12,
        stages=[
            StageProgress("prep", "prep", StageState.SUCCEEDED, duration_s=4.0, log_tail=["done"]),
            StageProgress(
                "train", "gpu", StageState.RUNNING, started_at="2026-01-01T00:00:10+00:00"
            ),
        ],
    )
    settings = load_settings(_env_file=None, GITHUB_API_URL="https://ghe.example.com/api/v3")
    view = build_view(
        progress,
        links=Links(settings),
        github=GitHubHost.of(settings).web_url,
        now=datetime(2026, 1, 1, 0, 1, 10, tzinfo=UTC),
        live_tails={"train": ["epoch 3"]},
    )
    assert view.live and view.trigger == "PR comment" and view.duration_s == 70
    assert [(s.tail, s.duration_s, s.live) for s in view.stages] == [
        (["done"], 4.0, False),
        (["epoch 3"], 60, True),
    ]
    assert view.links.commit == f"https://ghe.example.com/{GITHUB_REPO}/commit/{'a' * 40}"
    assert view.links.pr == f"https://ghe.example.com/{GITHUB_REPO}/pull/12"
    # A PR run is compared with its base branch, which this progress does not name.
    assert base_ref(progress) == ""
    progress.pr_number = None
    assert base_ref(progress) == "main"


def test_a_local_repo_gets_no_forge_links_and_a_stand_in_from_visibility() -> None:
    summary = RunSummary(
        run_id="r-2",
        repo="/srv/repos/thing",
        ref="",
        commit="",
        trigger="slack",
        requested_by="U1",
        state=RunState.QUEUED,
        pr_number=None,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=None,
    )
    progress = progress_from_summary(summary)
    assert progress.trigger is Trigger.SLACK and progress.stages == []
    view = build_view(
        progress,
        links=Links(load_settings(_env_file=None)),
        github="https://github.com",
        now=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
        live_tails={},
    )
    assert view.links.commit == view.links.repo == view.links.pr == ""


def test_read_tail_reads_the_end_of_a_big_log(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x.log").write_text(
        "".join(f"\x1b[31mline {i}\x1b[0m\n" for i in range(20000)) + "ghp_tail_secret_1\n"
    )
    masker = Masker(["ghp_tail_secret_1"])
    assert read_tail(store, "run", "x", masker, 3) == ["line 19998", "line 19999", "***"]
    assert read_tail(store, "run", "missing", masker) == []


# Real runs.


async def test_finished_run_page_json_list_logs_and_change_against_the_branch(
    stack: Stack, git_repo: Callable[..., Path], example_files: dict[str, str]
) -> None:
    repo = git_repo(example_files)
    earlier = await stack.control.start(github_request(repo, envs={"NUM_EPOCHS": "1"}))
    base = await wait_finished(stack.control, earlier.run_id)
    assert base.state is RunState.SUCCEEDED, base.error
    outcome = await stack.control.start(github_request(repo))
    progress = await wait_finished(stack.control, outcome.run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    run_id, commit = outcome.run_id, progress.commit

    page = await stack.http.get(f"/runs/{run_id}")
    assert page.status_code == 200
    html = page.text
    assert 'data-live="0"' in html and 'data-state="succeeded"' in html
    for stage in ("preprocess", "train", "eval"):
        assert f'data-stage="{stage}" data-state="succeeded"' in html
        assert f'href="/runs/{run_id}/logs/{stage}"' in html
    assert f'href="https://github.com/{GITHUB_REPO}/commit/{commit}"' in html
    assert f'href="http://localhost:8233/namespaces/default/workflows/{run_id}"' in html
    assert "PR comment" not in html and "push" in html and "alice" in html
    assert "<table>" in html and "<td>test</td>" in html  # the eval report, as HTML
    accuracy = progress.metrics["accuracy"]
    assert f'<div class="metric-value">{accuracy:.4g}</div>' in html
    # Compared with the earlier good run of the branch, which trained for one epoch only.
    assert f'href="/runs/{earlier.run_id}"' in html
    delta = accuracy - base.metrics["accuracy"]
    assert (f"{delta:+.4g}" if delta else "±0") in html

    api = (await stack.http.get(f"/api/runs/{run_id}")).json()
    assert api["state"] == "succeeded" and api["live"] is False
    assert [s["state"] for s in api["stages"]] == ["succeeded"] * 3
    assert api["metrics"]["accuracy"] == accuracy
    assert api["links"]["commit"] == f"https://github.com/{GITHUB_REPO}/commit/{commit}"
    assert api["stages"][1]["log_url"] == f"http://skyrun.test/runs/{run_id}/logs/train"
    assert api["baseline"]["run_id"] == earlier.run_id
    assert api["baseline"]["deltas"]["accuracy"] == pytest.approx(delta)

    listed = (await stack.http.get("/api/runs", params={"repo": GITHUB_REPO})).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id, earlier.run_id]  # newest first
    assert listed[0]["metrics"]["accuracy"] == accuracy and listed[0]["trigger_label"] == "push"
    assert listed[0]["commit"] == commit and listed[0]["duration_s"] > 0
    for params, expected in (
        ({"state": "succeeded", "trigger": "push"}, 2),
        ({"state": "failed"}, 0),
        ({"trigger": "slack"}, 0),
        ({"ref": "main", "repo": GITHUB_REPO}, 2),
        ({"ref": "other"}, 0),
    ):
        found = (await stack.http.get("/api/runs", params=params)).json()["runs"]
        assert len(found) == expected, params
    runs_page = (await stack.http.get("/runs", params={"state": "succeeded"})).text
    assert f'href="/runs/{run_id}"' in runs_page and "accuracy" in runs_page
    assert '<option value="succeeded" selected>' in runs_page

    log = await stack.http.get(f"/runs/{run_id}/logs/train")
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert "epoch 20/20" in log.text and ANSI not in log.text


async def test_failed_run_page_names_the_stage_and_shows_its_last_lines(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    outcome = await stack.control.start(request_for(git_repo(FAILING_PIPELINE)))
    progress = await wait_finished(stack.control, outcome.run_id)
    assert progress.state is RunState.FAILED

    html = (await stack.http.get(f"/runs/{outcome.run_id}")).text
    assert "Run failed:</strong> stage &#39;b&#39; failed with exit status 3" in html
    assert 'data-stage="b" data-state="failed"' in html
    assert 'data-stage="c" data-state="skipped"' in html
    assert re.search(r'<details class="tail" data-key="tail-b" open>', html)
    assert "Traceback: boom" in html and "exit 3" in html

    api = (await stack.http.get(f"/api/runs/{outcome.run_id}")).json()
    assert api["state"] == "failed" and api["error"] == progress.error
    assert any("Traceback: boom" in line for line in api["stages"][1]["log_tail"])
    listed = (await stack.http.get("/api/runs", params={"state": "failed"})).json()["runs"]
    assert [(r["run_id"], r["error"]) for r in listed] == [(outcome.run_id, progress.error)]

    assert "Traceback: boom" in (await stack.http.get(f"/runs/{outcome.run_id}/logs/b")).text
    never = await stack.http.get(f"/runs/{outcome.run_id}/logs/c")
    assert never.status_code == 404
    assert never.text == UNKNOWN_LOG.format(stage="c", run_id=outcome.run_id)


async def test_live_run_page_fragment_and_json_follow_the_running_stage(
    stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    outcome = await stack.control.start(request_for(git_repo(gated_files(gate))))
    run_id = outcome.run_id
    try:
        await wait_stage_running(stack.control, run_id, "train")
        log = stack.settings.logs_dir / run_id / "train.log"
        await wait_for(lambda: log.exists() and "epoch 1" in log.read_text())

        page = (await stack.http.get(f"/runs/{run_id}")).text
        assert 'data-live="1"' in page and 'data-state="running"' in page
        assert f'data-live-src="/runs/{run_id}?fragment=1"' in page
        assert 'data-stage="train" data-state="running"' in page
        assert 'data-stage="prep" data-state="succeeded"' in page
        assert "waiting for the gate" in page and "epoch 1" in page and ANSI not in page
        assert "Clusters up" in page

        fragment = await stack.http.get(f"/runs/{run_id}", params={"fragment": "1"})
        assert fragment.text.lstrip().startswith("<article") and "<html" not in fragment.text
        assert 'data-stage="train" data-state="running"' in fragment.text

        api = (await stack.http.get(f"/api/runs/{run_id}")).json()
        assert api["live"] is True and api["state"] == "running"
        train = api["stages"][1]
        assert train["state"] == "running" and train["elapsed_s"] >= 0
        assert any("waiting for the gate" in line for line in train["log_tail"])
        assert api["clusters_up"] != []
        listed = (await stack.http.get("/api/runs", params={"state": "running"})).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id] and listed[0]["live"] is True
        runs_page = (await stack.http.get("/runs")).text
        assert 'data-live-src="/runs?fragment=1"' in runs_page
        rows = (await stack.http.get("/runs", params={"fragment": "1"})).text
        assert rows.lstrip().startswith('<section class="runs" data-live="1">')
    finally:
        gate.touch()
    progress = await wait_finished(stack.control, run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error

    page = (await stack.http.get(f"/runs/{run_id}")).text
    assert 'data-live="0"' in page and 'data-stage="train" data-state="succeeded"' in page
    assert "<table>" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page


async def test_unknown_run_is_a_404_page_and_a_json_404(stack: Stack) -> None:
    page = await stack.http.get("/runs/no-such-run")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert UNKNOWN_RUN.format(run_id="no-such-run") in page.text
    api = await stack.http.get("/api/runs/no-such-run")
    assert api.status_code == 404
    assert api.json() == {"error": UNKNOWN_RUN.format(run_id="no-such-run")}
    assert (await stack.http.get("/runs/no-such-run/logs/train")).status_code == 404
    assert (await stack.http.get("/runs/x/logs/..%2F..%2Fetc")).status_code == 404
    bad = await stack.http.get("/api/runs", params={"state": "sleeping"})
    assert bad.status_code == 400 and "unknown state 'sleeping'" in bad.json()["error"]
    bad_page = await stack.http.get("/runs", params={"pr": "seven"})
    assert bad_page.status_code == 400 and escape(BAD_PR.format(value="seven")) in bad_page.text
    empty = await stack.http.get("/runs")
    assert "No runs yet" in empty.text


async def test_log_streams_while_the_stage_runs_and_stays_after_teardown(
    stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    outcome = await stack.control.start(request_for(git_repo(gated_files(gate))))
    run_id = outcome.run_id
    await wait_stage_running(stack.control, run_id, "train")
    received = ""
    async with (
        served(stack.app) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
        http.stream("GET", f"/runs/{run_id}/logs/train") as response,
    ):
        assert response.status_code == 200
        async for text in response.aiter_text():
            received += text
            if "epoch 1" in received and not gate.exists():
                # The stage is still running: what came so far was streamed, not buffered.
                progress = await stack.control.progress(run_id)
                assert progress is not None and progress.state is RunState.RUNNING
                assert clusters_left(stack.settings) != []
                gate.touch()
    assert gate.exists(), "the log never showed the running stage's output"
    assert "waiting for the gate" in received and "gate open" in received
    assert received.rstrip().endswith("[skyrun] stage train exited with status 0")
    assert ANSI not in received

    progress = await wait_finished(stack.control, run_id)
    assert progress.state is RunState.SUCCEEDED
    assert clusters_left(stack.settings) == []
    after = await stack.http.get(f"/runs/{run_id}/logs/train")
    assert after.status_code == 200 and after.text == received


async def test_a_log_outlives_its_run_in_temporal(stack: Stack) -> None:
    log = stack.settings.logs_dir / "forgotten-run" / "train.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"\x1b[1mbold\x1b[0m line\nprogress 10%\rprogress 100%\nlast line, no newline")
    response = await stack.http.get("/runs/forgotten-run/logs/train")
    assert response.status_code == 200
    assert response.text == "bold line\nprogress 100%\nlast line, no newline"


async def test_no_secret_reaches_a_page(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    secrets = {
        "GITHUB_WEBHOOK_SECRET": "whsec-do-not-show",
        "GITHUB_TOKEN": "ghp_do_not_show_1234",
        "SLACK_BOT_TOKEN": "xoxb-do-not-show",
        "SLACK_SIGNING_SECRET": "slack-signing-do-not-show",
        "GITHUB_API_URL": "https://user:ghp_in_url_do_not_show@ghe.example.com/api/v3",
    }
    settings = make_settings(**secrets)
    async with bot_stack(client, settings) as running:
        outcome = await running.control.start(request_for(git_repo(FAILING_PIPELINE)))
        await wait_finished(running.control, outcome.run_id)
        bodies = [
            (await running.http.get(path)).text
            for path in (
                "/runs",
                "/api/runs",
                f"/runs/{outcome.run_id}",
                f"/runs/{outcome.run_id}?fragment=1",
                f"/api/runs/{outcome.run_id}",
                f"/runs/{outcome.run_id}/logs/b",
                "/metrics",
            )
        ]
    for body in bodies:
        for value in secrets.values():
            assert "do_not_show" not in body and "do-not-show" not in body, value


async def test_run_pages_can_be_turned_off(
    client: Client, make_settings: Callable[..., Settings]
) -> None:
    async with bot_stack(client, make_settings(SKYRUN_RUN_PAGES="false")) as running:
        for path in ("/runs", "/runs/x", "/runs/x/logs/y"):
            response = await running.http.get(path)
            assert (response.status_code, response.text) == (404, PAGES_OFF)
        api = await running.http.get("/api/runs")
        assert api.status_code == 404 and api.json() == {"error": PAGES_OFF}
        assert (await running.http.get("/healthz")).status_code == 200


async def test_a_run_no_worker_answers_for_shows_what_temporal_lists(
    client: Client, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    app = create_app(settings, client)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://skyrun.test") as http,
    ):
        control = RunControl(client, settings.temporal_task_queue)  # and no worker at all
        outcome = await control.start(request_for(git_repo({"a.yaml": "run: echo\n"})))
        try:
            page = await http.get(f"/runs/{outcome.run_id}")
            assert page.status_code == 200 and 'data-state="queued"' in page.text
            assert str(escape(DETAILS_UNAVAILABLE.format(reason=QUERY_TIMED_OUT))) in page.text
            listed = (await http.get("/api/runs")).json()["runs"]
            assert [(r["run_id"], r["metrics"]) for r in listed] == [(outcome.run_id, None)]
        finally:
            await client.get_workflow_handle(outcome.run_id).terminate()


async def test_without_temporal_pages_say_so_and_logs_are_still_served(
    settings: Settings,
) -> None:
    unreachable = await Client.connect("127.0.0.1:1", lazy=True)
    log = settings.logs_dir / "some-run" / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\nepoch 2\n")
    app = create_app(settings, unreachable)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://skyrun.test") as http,
    ):
        for path in ("/runs", "/runs/some-run"):
            page = await http.get(path)
            assert page.status_code == 503 and "Temporal is not reachable" in page.text
        api = await http.get("/api/runs/some-run")
        assert api.status_code == 503 and "Check TEMPORAL_ADDRESS" in api.json()["error"]
        served_log = await http.get("/runs/some-run/logs/train")
        assert (served_log.status_code, served_log.text) == (200, "epoch 1\nepoch 2\n")


# Attacks on the log store: whatever a task plants there is never served.

PASSWD = "root:x:0:0"


def _passwd_is_readable() -> bool:
    return PASSWD in Path("/etc/passwd").read_text()


async def _get_within(http: httpx.AsyncClient, path: str, seconds: float = 10) -> httpx.Response:
    """GET that must answer quickly: a planted FIFO must never make the route wait."""
    return await asyncio.wait_for(http.get(path), seconds)


async def test_planted_symlinks_fifos_directories_and_links_are_never_served(
    stack: Stack, tmp_path: Path
) -> None:
    assert _passwd_is_readable()
    logs = stack.settings.logs_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "train.log").write_text("secret of the host\n")
    (logs / "file-link").mkdir(parents=True)
    (logs / "file-link" / "train.log").symlink_to("/etc/passwd")
    (logs / "dir-link").symlink_to(outside)
    (logs / "fifo").mkdir()
    os.mkfifo(logs / "fifo" / "train.log")
    (logs / "dir" / "train.log").mkdir(parents=True)
    (logs / "hard-link").mkdir()
    os.link(outside / "train.log", logs / "hard-link" / "train.log")
    for run_id in ("file-link", "dir-link", "fifo", "dir", "hard-link"):
        response = await _get_within(stack.http, f"/runs/{run_id}/logs/train")
        assert response.status_code == 404, run_id
        assert response.text == UNKNOWN_LOG.format(stage="train", run_id=run_id)
    for path in (
        "/runs/..%2Foutside/logs/train",
        "/runs/x/logs/..%2F..%2Foutside%2Ftrain",
        "/runs/%2Fetc/logs/passwd",
    ):
        response = await _get_within(stack.http, path)
        assert response.status_code == 404 and "secret of the host" not in response.text


async def test_a_log_swapped_for_a_symlink_while_its_stage_runs_shows_nothing_of_the_target(
    stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "train.log").write_text("secret of the host\n")
    gate = tmp_path / "gate"
    outcome = await stack.control.start(request_for(git_repo(gated_files(gate))))
    run_id = outcome.run_id
    run_dir = stack.settings.logs_dir / run_id
    try:
        await wait_stage_running(stack.control, run_id, "train")
        log = run_dir / "train.log"
        await wait_for(lambda: log.exists() and "epoch 1" in log.read_text())
        # As a task with write access to the store would: the log, then the whole run directory.
        log.unlink()
        log.symlink_to("/etc/passwd")
        for secret in (PASSWD, "secret of the host"):
            if secret != PASSWD:
                run_dir.rename(tmp_path / "moved")
                run_dir.symlink_to(outside)
            page = (await stack.http.get(f"/runs/{run_id}")).text
            api = (await stack.http.get(f"/api/runs/{run_id}")).json()
            assert 'data-stage="train" data-state="running"' in page
            assert secret not in page and secret not in str(api["stages"][1]["log_tail"])
            served = await _get_within(stack.http, f"/runs/{run_id}/logs/train")
            assert served.status_code == 404 and secret not in served.text
    finally:
        gate.touch()
    progress = await wait_finished(stack.control, run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    # The worker kept writing its own file, and read its results back from it.
    assert progress.metrics["accuracy"] == 0.75
    assert any("gate open" in line for line in progress.stages[1].log_tail)
    assert "secret of the host" not in str(progress) and PASSWD not in str(progress)
    assert (outside / "train.log").read_text() == "secret of the host\n"


async def test_the_bot_masks_its_own_secrets_in_a_log_no_worker_masked(
    client: Client, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(SLACK_SIGNING_SECRET="bot-side-signing-secret")
    log = settings.logs_dir / "old-run" / "train.log"
    log.parent.mkdir(parents=True)
    # Written by an older worker, or one with other settings: the bot's own secret is in it.
    log.write_bytes(b"a\nsigning=bot-side-signing-secret\nlast bot-side-signing-secret")
    app = create_app(settings, client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        served = await http.get("/runs/old-run/logs/train")
    assert (served.status_code, served.text) == (200, "a\nsigning=***\nlast ***")


async def test_pages_mask_the_bots_secrets_where_the_worker_did_not_know_them(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    secret = "only-the-bot-knows-this-secret"
    worker_settings = make_settings()
    bot_settings = make_settings(GITHUB_WEBHOOK_SECRET=secret)
    files = {
        "a.yaml": 'run: |\n  echo "leak $LEAK"\n  echo ::report\n  echo "r $LEAK"\n  exit 3\n',
        ".skyrun.yaml": "stages:\n  - {name: a, task: a.yaml}\n",
    }
    app = create_app(bot_settings, client)
    async with (
        running_workers(build_workers(client, worker_settings)),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        control = RunControl(client, bot_settings.temporal_task_queue)
        outcome = await control.start(request_for(git_repo(files), envs={"LEAK": secret}))
        progress = await wait_finished(control, outcome.run_id)
        assert progress.state is RunState.FAILED
        assert any(secret in line for line in progress.stages[0].log_tail), "the worker let it by"
        bodies = [
            (await http.get(path)).text
            for path in (
                f"/runs/{outcome.run_id}",
                f"/api/runs/{outcome.run_id}",
                f"/runs/{outcome.run_id}/logs/a",
                "/api/runs",
            )
        ]
    assert "leak ***" in bodies[0] and "leak ***" in bodies[1] and "leak ***" in bodies[2]
    for body in bodies:
        assert secret not in body
