"""Direct (synchronous) calls: `POST /v1/responses` and `POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lotlens_openai_standin.answers import CHAT_ENDPOINT, RESPONSES_ENDPOINT, answer_json
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.faults import Faults
from lotlens_openai_standin.ids import new_id
from lotlens_openai_standin.request_json import read_json_object


def direct_router(config: StandinConfig, faults: Faults) -> APIRouter:
    """The two synchronous model endpoints."""
    router = APIRouter()

    async def handle(endpoint: str, request: Request) -> Response:
        body = await read_json_object(request)
        if config.latency_seconds > 0:
            await asyncio.sleep(config.latency_seconds)
        return Response(answer_json(endpoint, body, faults.take_language_faults).body,
                        media_type="application/json", headers={"x-request-id": new_id("req_", 32)})

    @router.post(RESPONSES_ENDPOINT)
    async def create_response(request: Request) -> Response:
        return await handle(RESPONSES_ENDPOINT, request)

    @router.post(CHAT_ENDPOINT)
    async def create_chat_completion(request: Request) -> Response:
        return await handle(CHAT_ENDPOINT, request)

    return router
