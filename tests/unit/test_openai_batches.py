"""The Batch API calls through the official SDK, against an in-memory transport (no connection)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx2
import openai
import pytest

from lotlens_common.model.errors import ModelRequestError, ModelUnavailableError
from lotlens_common.model.openai_client import OpenAIBatches


def test_a_batch_create_whose_answer_is_lost_is_not_sent_again_by_the_sdk() -> None:
    # OpenAI may have created the batch before its answer was lost (a 502 from a proxy, a reset).
    # The SDK retried the POST twice, with no idempotency key: each retry could start another batch
    # over the same file, all of it paid for. The shard stays `building` instead, and recovery
    # finds the batch by its metadata before it creates one.
    creates: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        creates.append(request)
        return httpx2.Response(502, json={"error": {"message": "Bad gateway", "type": "server_error",
                                                   "param": None, "code": None}})

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    with pytest.raises(ModelUnavailableError):
        asyncio.run(OpenAIBatches(client).create_batch("file-1", {"lotlens_shard": "vision-1"}))
    assert [(r.method, r.url.path) for r in creates] == [("POST", "/v1/batches")]


def test_a_cancel_openai_refuses_with_409_is_asked_once() -> None:
    # OpenAI answers 409 to a cancel of a batch it cannot cancel (finished, or stuck finalizing):
    # its status, not a passing lock conflict. The SDK asked twice more, with backoff (about 1.5 s
    # of the stage's round, with the shard's lock held), each poll of a stuck batch for an hour.
    cancels: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        cancels.append(request)
        return httpx2.Response(409, json={"error": {
            "message": "Cannot cancel a batch with status 'completed'.", "type": "invalid_request_error",
            "param": None, "code": None}})

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    with pytest.raises(ModelRequestError) as refused:
        asyncio.run(OpenAIBatches(client).cancel_batch("batch_1"))
    assert refused.value.status_code == 409 and refused.value.code is None
    assert [(r.method, r.url.path) for r in cancels] == [("POST", "/v1/batches/batch_1/cancel")]


def _listing(pages: list[httpx2.Request]) -> OpenAIBatches:
    """Three pages of batches (`b0` the newest), the shard `s1`'s batch on the first; each page
    asked for is kept in `pages`."""
    listed = [{"id": f"b{i}", "object": "batch", "endpoint": "/v1/responses", "input_file_id": "f",
               "completion_window": "24h", "status": "completed", "created_at": 1_700_000_000 - i,
               "metadata": {"lotlens_shard_id": f"s{i}"}} for i in range(6)]

    def answer(request: httpx2.Request) -> httpx2.Response:
        pages.append(request)
        after = request.url.params.get("after")
        start = next(i + 1 for i, b in enumerate(listed) if b["id"] == after) if after else 0
        data = listed[start:start + 2]
        return httpx2.Response(200, json={"object": "list", "data": data, "first_id": data[0]["id"],
                                          "last_id": data[-1]["id"], "has_more": start + 2 < len(listed)})

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    return OpenAIBatches(client)


def test_looking_up_one_shards_batch_reads_no_page_after_the_one_that_shows_it() -> None:
    # Recovery of a dead builder's shard read every page of the listing (up to 50, 5,000 batches)
    # after the one that held its batch.
    pages: list[httpx2.Request] = []
    found = asyncio.run(_listing(pages).find_batch({"lotlens_shard_id": "s1"}))
    assert found is not None and found["id"] == "b1"
    assert len(pages) == 1
    assert asyncio.run(_listing(pages).find_batch({"lotlens_shard_id": "none"})) is None


def test_listing_the_stages_batches_reads_every_page() -> None:
    pages: list[httpx2.Request] = []
    found = asyncio.run(_listing(pages).find_batches({}))
    assert [b["id"] for b in found] == [f"b{i}" for i in range(6)] and len(pages) == 3


def test_a_long_output_line_is_read_in_time_linear_in_its_size() -> None:
    """Each chunk was appended to what was pending and the whole split again: a 32 MB line in 16 KB
    chunks took 26 s (a 200 MB line about an hour), blocking the stage's loop. Linear, four times
    the line takes about four times as long (quadratic: sixteen)."""
    # The best of three each: one read's time also counts its first page faults and any
    # collection that runs meanwhile (a CI run once measured 0.17 s for a 0.04 s read).
    assert min(_reading_time(32) for _ in range(3)) < 10 * min(_reading_time(8) for _ in range(3))


def _reading_time(megabytes: int) -> float:
    line = b"x" * (megabytes * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(line), 16 * 1024):
            yield line[start:start + 16 * 1024]
        yield b"\nnext\n"

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=chunks())

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))

    async def read() -> list[int]:
        return [len(got) async for got in OpenAIBatches(client).iter_file_lines("file-out")]

    started = time.process_time()
    assert asyncio.run(read()) == [len(line), 4]
    return max(time.process_time() - started, 0.01)
