"""Direct Responses calls through the official SDK, against an in-memory transport (no connection)."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from lotlens_common.model.openai_client import call_responses

ANSWER = {"id": "resp_1", "object": "response", "status": "completed", "output": []}


@pytest.mark.parametrize(("status", "message"), [(408, "Request timed out."),
                                                 (409, "Conflict, please retry.")])
def test_a_request_timeout_or_lock_conflict_is_asked_again(status: int, message: str) -> None:
    # The SDK's own policy retries 408 and 409; our loop replaces it (max_retries=0) and took
    # both as the request's fault: a synchronous lot failed for good on OpenAI's passing trouble.
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if len(seen) == 1:
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
            return httpx2.Response(status, json={"error": error})
        return httpx2.Response(200, json=ANSWER)

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    assert asyncio.run(call_responses(client, {"model": "gpt-4.1-mini", "input": "x"})) == ANSWER
    assert len(seen) == 2
