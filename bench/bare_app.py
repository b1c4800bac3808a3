"""`python -m bench.bare_app PORT BODY_FILE`: the polling floor, a bare Starlette JSON endpoint.

Served by uvicorn exactly like the gateway (one process, asyncio loop, h11, no access log); every
GET answers the same JSON body (a real `batch-status` / `batch-results` answer saved by the bench).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(body: bytes) -> Starlette:
    """An app answering every path with `body` as JSON."""

    async def answer(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        print("ready", flush=True)
        yield

    return Starlette(routes=[Route("/{path:path}", answer)], lifespan=lifespan)


if __name__ == "__main__":
    app = build(Path(sys.argv[2]).read_bytes())
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                http="h11", loop="asyncio")
