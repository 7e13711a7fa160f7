from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bot.bodies import read_capped


async def echo_size(request: Request) -> Response:
    body = await read_capped(request, 10)
    return PlainTextResponse("too big" if body is None else str(len(body)))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_body_is_read_whole_up_to_the_limit_and_refused_past_it() -> None:
    app = Starlette(routes=[Route("/", echo_size, methods=["POST"])])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        assert (await http.post("/", content=b"0123456789")).text == "10"
        assert (await http.post("/", content=b"0123456789x")).text == "too big"
        # Chunked: no length to check first, so it stops as soon as the limit is passed.
        assert (await http.post("/", content=chunks(b"01234", b"56789"))).text == "10"
        assert (await http.post("/", content=chunks(b"01234", b"567890"))).text == "too big"
