"""Direct (synchronous) calls: `POST /v1/responses` and `POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lotlens_openai_standin.answers import CHAT_ENDPOINT, RESPONSES_ENDPOINT, answer
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.faults import Faults
from lotlens_openai_standin.ids import new_id
from lotlens_openai_standin.request_json import read_json_object


def direct_router(config: StandinConfig, faults: Faults) -> APIRouter:
    """The two synchronous model endpoints."""
    router = APIRouter()

    async def handle(endpoint: str, request: Request) -> JSONResponse:
        body = await read_json_object(request)
        if config.latency_seconds > 0:
            await asyncio.sleep(config.latency_seconds)
        return JSONResponse(answer(endpoint, body, faults.take_language_faults),
                            headers={"x-request-id": new_id("req_", 32)})

    @router.post(RESPONSES_ENDPOINT)
    async def create_response(request: Request) -> JSONResponse:
        return await handle(RESPONSES_ENDPOINT, request)

    @router.post(CHAT_ENDPOINT)
    async def create_chat_completion(request: Request) -> JSONResponse:
        return await handle(CHAT_ENDPOINT, request)

    return router
