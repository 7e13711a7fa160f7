"""Stage logs: tails of live stages, the log route, following, masking, and planted files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from bot.app import create_app
from bot.pages.logs import TAIL_BYTES, LogHandle, StageLogs, read_tail
from bot.pages.texts import UNKNOWN_LOG
from bot.state import BotState
from tests.bot.pages.helpers import (
    ANSI,
    Stack,
    gated_files,
    get_within,
    served,
    wait_for,
)
from tests.runs import clusters_left, request_for, wait_finished, wait_stage_running
from worker.contract import RunState
from worker.limits import MAX_LOG_LINE_BYTES
from worker.logstore import LogNotFound, LogStore
from worker.masking import Masker
from worker.settings import Settings

PASSWD = "root:x:0:0"


def test_read_tail_reads_the_end_of_a_big_log(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x.log").write_text(
        "".join(f"\x1b[31mline {i}\x1b[0m\n" for i in range(20000)) + "ghp_tail_secret_1\n"
    )
    masker = Masker(["ghp_tail_secret_1"])
    assert read_tail(store, "run", "x", masker, 3) == ["line 19998", "line 19999", "***"]
    assert read_tail(store, "run", "missing", masker) == []


def test_a_tail_never_starts_with_a_cut_line_nor_shows_part_of_a_long_secret(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    (tmp_path / "run").mkdir()
    # Longer than a tail line may be: cut to width first, its start would escape the masker.
    secret = "ghp_long_secret_" + "s" * MAX_LOG_LINE_BYTES
    # The line of x straddles the point the tail starts reading from.
    body = "x" * (TAIL_BYTES - 50) + "\n" + f"token={secret}" + "\nend\n"
    (tmp_path / "run" / "x.log").write_text("head\n" + body)
    lines = read_tail(store, "run", "x", Masker([secret]), 100)
    assert lines == ["token=***", "end"]


async def test_a_stage_that_runs_but_has_not_written_gets_its_log_when_it_appears(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    with pytest.raises(LogNotFound):  # a stage that cannot write any more: a 404
        LogHandle.open(store, "run", "x", live=False)
    handle = LogHandle.open(store, "run", "x", live=True)
    assert handle.read_chunk() == b"" and not handle.refused
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x.log").write_bytes(b"hello\n")
    assert handle.read_chunk() == b"hello\n"
    handle.close()
    # What appears in its place as a symlink ends the stream instead of being read.
    (tmp_path / "run" / "y.log").symlink_to("/etc/passwd")
    planted = LogHandle(store, "run", "y", None)
    assert planted.read_chunk() == b"" and planted.refused


async def test_a_followed_log_ends_when_nobody_answers_for_long_enough(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.pages.logs.FOLLOW_CHECK_S", 0.01)
    monkeypatch.setattr("bot.pages.logs.FOLLOW_POLL_S", 0.01)
    monkeypatch.setattr("bot.pages.logs.FOLLOW_GIVE_UP_S", 0.3)
    asked: list[str] = []

    async def silent(state: BotState, run_id: str, stage: str) -> bool | None:
        asked.append(stage)
        return None

    store = LogStore(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "s.log").write_bytes(b"one\ntwo \x1b[1mbold\x1b[0m secret-x")
    route = StageLogs(Masker(["secret-x"]), silent)
    handle = LogHandle.open(store, "r", "s", live=True)
    state = BotState(settings=settings, client=None, control=None, logs=store)  # type: ignore[arg-type]
    received = [text async for text in route._follow(state, "r", "s", handle, live=True)]
    assert "".join(received) == "one\ntwo bold ***"
    assert len(asked) >= 2  # it kept asking until it gave up


async def test_log_streams_while_the_stage_runs_and_stays_after_teardown(
    gate: Path, stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
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
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
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
        served_log = await http.get("/runs/old-run/logs/train")
    assert (served_log.status_code, served_log.text) == (200, "a\nsigning=***\nlast ***")


# Attacks on the log store: whatever a task plants there is never served.


async def test_planted_symlinks_fifos_directories_and_links_are_never_served(
    stack: Stack, tmp_path: Path
) -> None:
    assert PASSWD in Path("/etc/passwd").read_text()
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
        response = await get_within(stack.http, f"/runs/{run_id}/logs/train")
        assert response.status_code == 404, run_id
        assert response.text == UNKNOWN_LOG.format(stage="train", run_id=run_id)
    for path in (
        "/runs/..%2Foutside/logs/train",
        "/runs/x/logs/..%2F..%2Foutside%2Ftrain",
        "/runs/%2Fetc/logs/passwd",
    ):
        response = await get_within(stack.http, path)
        assert response.status_code == 404 and "secret of the host" not in response.text


async def test_a_log_swapped_for_a_symlink_while_its_stage_runs_shows_nothing_of_the_target(
    gate: Path, stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "train.log").write_text("secret of the host\n")
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
            served_log = await get_within(stack.http, f"/runs/{run_id}/logs/train")
            assert served_log.status_code == 404 and secret not in served_log.text
    finally:
        gate.touch()
    progress = await wait_finished(stack.control, run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    # The worker kept writing its own file, and read its results back from it.
    assert progress.metrics["accuracy"] == 0.75
    assert any("gate open" in line for line in progress.stages[1].log_tail)
    assert "secret of the host" not in str(progress) and PASSWD not in str(progress)
    assert (outside / "train.log").read_text() == "secret of the host\n"
