"""Direct Responses calls through the official SDK, against an in-memory transport (no connection)."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from lotlens_common.model.errors import (
    ModelRateLimitedError,
    ModelTimeoutError,
    ModelUnavailableError,
    ModelUnreachableError,
)
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


def answering(*first: httpx2.Response) -> tuple[openai.AsyncOpenAI, list[httpx2.Request]]:
    """A client whose calls get `first` in turn, then the answer; and the requests it sent."""
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return first[len(seen) - 1] if len(seen) <= len(first) else httpx2.Response(200, json=ANSWER)

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    return client, seen


def error(status: int, headers: dict[str, str], kind: str = "server_error") -> httpx2.Response:
    return httpx2.Response(status, headers=headers, json={"error": {
        "message": "m", "type": kind, "param": None, "code": None}})


def test_the_apis_x_should_retry_header_decides_whether_a_call_is_asked_again() -> None:
    # The SDK honours OpenAI's `x-should-retry` (its own policy, replaced by our loop): a 5xx the
    # API says not to retry was sent twice more, and a 4xx it says to retry failed the lot at once.
    client, seen = answering(error(500, {"x-should-retry": "false"}))
    with pytest.raises(ModelUnavailableError):
        asyncio.run(call_responses(client, {"model": "gpt-4.1-mini", "input": "x"}))
    assert len(seen) == 1
    client, seen = answering(error(400, {"x-should-retry": "true"}, "invalid_request_error"))
    assert asyncio.run(call_responses(client, {"model": "gpt-4.1-mini", "input": "x"})) == ANSWER
    assert len(seen) == 2


def test_a_rate_limit_asking_a_longer_wait_than_the_loop_takes_is_not_asked_again_early() -> None:
    # A 429 with `retry-after: 120` was asked again after 60 s, before the API said it would
    # answer: another 429, an attempt spent for nothing. It is given up at once, with its wait.
    client, seen = answering(error(429, {"retry-after": "120"}, "requests"))
    with pytest.raises(ModelRateLimitedError) as raised:
        asyncio.run(call_responses(client, {"model": "gpt-4.1-mini", "input": "x"}))
    assert len(seen) == 1 and raised.value.retry_after_s == 120


@pytest.mark.parametrize(("failure", "unreachable"), [
    (httpx2.ConnectError("[Errno 111] Connection refused"), True),
    # httpx: "Timed out while connecting to the host": no connection, so no byte of the request
    # left. It used an attempt in direct mode where a refused connection did not.
    (httpx2.ConnectTimeout("timed out"), True),
    (httpx2.WriteTimeout("timed out"), False),  # the server may have most of the request
    (httpx2.ReadTimeout("timed out"), False),  # the server has it, and may be stuck on it
    (httpx2.RemoteProtocolError("Server disconnected without sending a response."), False),
    (httpx2.ReadError("[Errno 104] Connection reset by peer"), False)])
def test_only_a_connection_never_made_reads_as_the_server_unreachable(
        failure: httpx2.TransportError, unreachable: bool) -> None:
    # A server that dropped the request midway (a model server killed by one request, out of
    # memory on its images) read as one not there: in direct mode that request's round was
    # never counted as an attempt, and it was sent again for ever, its job never ending.
    def answer(request: httpx2.Request) -> httpx2.Response:
        raise failure

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    with pytest.raises(ModelUnavailableError) as raised:
        asyncio.run(call_responses(client, {"model": "gpt-4.1-mini", "input": "x"}, max_attempts=1))
    assert isinstance(raised.value, ModelUnreachableError) is unreachable
    # A timeout is still one (a synchronous lot answers 504, the metrics count a timeout).
    assert isinstance(raised.value, ModelTimeoutError) is isinstance(failure, httpx2.TimeoutException)


def test_a_call_the_server_dropped_once_is_not_unreachable_when_its_retries_find_it_down() -> None:
    # The request that brought the model server down was dropped midway, and its retries found
    # the server restarting (connection refused): the last failure alone named the call, as
    # unreachable, and in direct mode its round was sent again for ever (found by review).
    failures = iter([httpx2.ReadError("[Errno 104] Connection reset by peer"),
                     httpx2.ConnectError("[Errno 111] Connection refused"),
                     httpx2.ConnectError("[Errno 111] Connection refused")])

    def answer(request: httpx2.Request) -> httpx2.Response:
        raise next(failures)

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    with pytest.raises(ModelUnavailableError) as raised:
        asyncio.run(call_responses(client, {"model": "gpt-4.1-mini", "input": "x"}))
    assert not isinstance(raised.value, ModelUnreachableError)
