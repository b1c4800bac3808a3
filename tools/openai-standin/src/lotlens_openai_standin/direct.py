"""Direct (synchronous) calls: `POST /v1/responses` and `POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lotlens_openai_standin.answers import CHAT_ENDPOINT, RESPONSES_ENDPOINT, answer
from lotlens_openai_standin.api_errors import ApiError, server_error
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.faults import Faults, Stats
from lotlens_openai_standin.ids import new_id
from lotlens_openai_standin.request_json import read_json_object


def rate_limited(model: object) -> ApiError:
    """The 429 OpenAI sends when a per-minute limit is hit, with its `Retry-After`."""
    message = (f"Rate limit reached for {model} in organization org-standin on requests per min (RPM): "
               "Limit 3, Used 3, Requested 1. Please try again in 1s. Visit "
               "https://platform.openai.com/account/rate-limits to learn more.")
    return ApiError(429, message, type_="requests", code="rate_limit_exceeded",
                    headers={"retry-after": "1", "x-ratelimit-limit-requests": "3",
                             "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"})


def direct_router(config: StandinConfig, faults: Faults, stats: Stats) -> APIRouter:
    """The two synchronous model endpoints."""
    router = APIRouter()

    async def handle(endpoint: str, request: Request) -> JSONResponse:
        stats.direct_calls[endpoint] = stats.direct_calls.get(endpoint, 0) + 1
        body = await read_json_object(request)
        if config.latency_seconds > 0:
            await asyncio.sleep(config.latency_seconds)
        fault = faults.take_direct_fault()
        if fault == "rate_limit":
            raise rate_limited(body.get("model"))
        if fault == "server_error":
            raise server_error()
        return JSONResponse(answer(endpoint, body), headers={"x-request-id": new_id("req_", 32)})

    @router.post(RESPONSES_ENDPOINT)
    async def create_response(request: Request) -> JSONResponse:
        return await handle(RESPONSES_ENDPOINT, request)

    @router.post(CHAT_ENDPOINT)
    async def create_chat_completion(request: Request) -> JSONResponse:
        return await handle(CHAT_ENDPOINT, request)

    return router
