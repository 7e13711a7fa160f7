"""Stage logs from the log store, masked: live tails and the log route that follows a stage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from bot.pages.texts import UNKNOWN_LOG
from bot.state import BotState
from worker.logparse import strip_ansi, tail_lines
from worker.logstore import LogNotFound, LogStore
from worker.masking import Masker

log = logging.getLogger(__name__)

LIVE_TAIL_LINES = 40
TAIL_BYTES = 64 * 1024
LOG_CHUNK = 64 * 1024
FOLLOW_POLL_S = 0.25
FOLLOW_CHECK_S = 1.0
FOLLOW_GIVE_UP_S = 120.0
"""A followed log ends when the run's progress cannot be read for this long."""
LOG_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    # Ask proxies (nginx) not to buffer a followed log.
    "X-Accel-Buffering": "no",
}

StageLive = Callable[[BotState, str, str], Awaitable[bool | None]]
"""(state, run_id, stage) → True while the stage runs, False once it cannot write more, None when
nobody answers."""


def read_tail(
    logs: LogStore, run_id: str, stage: str, masker: Masker, count: int = LIVE_TAIL_LINES
) -> list[str]:
    """The last lines of a stage's log, read from its end (the file may be large and growing);
    nothing when the store has no regular file for it."""
    try:
        handle = logs.open_read(run_id, stage)
    except LogNotFound:
        return []
    with handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - TAIL_BYTES))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    if size > TAIL_BYTES:
        text = text.split("\n", 1)[-1]
    # Masked before the lines are cut to width, so no cut leaves part of a secret.
    return tail_lines(masker.mask(text), count)


class LogHandle:
    """A stage log the route reads through one open file, opened from the store only."""

    def __init__(self, logs: LogStore, run_id: str, stage: str, file: BinaryIO | None) -> None:
        self._logs, self._run_id, self._stage, self._file = logs, run_id, stage, file
        self.refused = False
        """What appeared is not a regular file of the store: the stream ends."""

    @classmethod
    def open(cls, logs: LogStore, run_id: str, stage: str, live: bool | None) -> LogHandle:
        """The log, opened once: it is read through this handle only, never by path again.

        A stage that is running but has not written yet gets a handle that opens the log when it
        appears (the same safe way); anything but a regular file of the store is refused."""
        try:
            return cls(logs, run_id, stage, logs.open_read(run_id, stage))
        except LogNotFound as err:
            if not live or not err.absent:
                raise
            return cls(logs, run_id, stage, None)

    def read_chunk(self) -> bytes:
        if self._file is None:
            try:
                self._file = self._logs.open_read(self._run_id, self._stage)
            except LogNotFound as err:
                if not err.absent:
                    self.refused = True
                return b""
        return self._file.read(LOG_CHUNK)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class StageLogs:
    """`GET /runs/{run_id}/logs/{stage}`: the stage's full log as plain text, followed while
    `stage_live` says the stage is running."""

    def __init__(self, masker: Masker, stage_live: StageLive) -> None:
        self.masker = masker
        self.stage_live = stage_live

    async def endpoint(self, request: Request) -> Response:
        state: BotState = request.app.state.bot
        run_id, stage = request.path_params["run_id"], request.path_params["stage"]
        live = await self.stage_live(state, run_id, stage)
        try:
            handle = await asyncio.to_thread(LogHandle.open, state.logs, run_id, stage, live)
        except LogNotFound:
            return PlainTextResponse(UNKNOWN_LOG.format(stage=stage, run_id=run_id), 404)
        log.info("serving log", extra={"run_id": run_id, "stage": stage, "follow": bool(live)})
        return StreamingResponse(
            self._follow(state, run_id, stage, handle, bool(live)),
            media_type="text/plain; charset=utf-8",
            headers=LOG_HEADERS,
        )

    async def _follow(
        self, state: BotState, run_id: str, stage: str, handle: LogHandle, live: bool
    ) -> AsyncIterator[str]:
        try:
            async for text in self._follow_lines(state, run_id, stage, handle, live):
                yield text
        finally:
            handle.close()

    async def _follow_lines(
        self, state: BotState, run_id: str, stage: str, handle: LogHandle, live: bool
    ) -> AsyncIterator[str]:
        partial = b""
        checked = unanswered_since = time.monotonic()
        while True:
            chunk = await asyncio.to_thread(handle.read_chunk)
            if chunk:
                complete, _, partial = (partial + chunk).rpartition(b"\n")
                if complete:
                    # Whole lines only: "\n" never splits a UTF-8 sequence, an escape code or a
                    # secret (the masker masks multi-line ones line by line).
                    yield await asyncio.to_thread(self.clean, complete + b"\n")
                continue
            if not live or handle.refused:
                break
            now = time.monotonic()
            if now - checked >= FOLLOW_CHECK_S:
                checked = now
                answer = await self.stage_live(state, run_id, stage)
                if answer is None:
                    live = now - unanswered_since < FOLLOW_GIVE_UP_S
                else:
                    unanswered_since = now
                    live = answer
                # One more read after the stage ended picks up its last lines.
                continue
            await asyncio.sleep(FOLLOW_POLL_S)
        if partial:
            yield self.clean(partial)

    def clean(self, data: bytes) -> str:
        """Log bytes as the route serves them: text without escape codes, secrets masked."""
        return self.masker.mask(strip_ansi(data.decode("utf-8", errors="replace")))
