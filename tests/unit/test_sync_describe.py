"""The synchronous describer against in-memory image host and OpenAI transports (no connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import orjson

from lotlens_common.clock import utc_now
from lotlens_common.model.settings import ModelSettings
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.sync_mode import ImagePolicy, SyncDescriber
from lotlens_gateway.validation import LotRequest, Submission
from tests.network_guard import stub_resolver
from tests.servers import png

IMAGE = png()


def image_host(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"Content-Type": "image/png", "Content-Length": str(len(IMAGE))},
                           stream=httpx2.ByteStream(b"" if request.method == "HEAD" else IMAGE))


LOT = LotRequest("lot-1", "Camry", ("https://img.test/a.png",), None)


def describer(openai_api: Callable[[httpx2.Request], httpx2.Response]) -> SyncDescriber:
    """The describer over an in-memory OpenAI and an image host the stub resolver names."""
    model = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", max_retries=0,
                               http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(openai_api)))
    images = httpx2.AsyncClient(transport=httpx2.MockTransport(image_host))
    policy = ImagePolicy(allow_loopback=False, concurrency=2, timeout_s=5, max_bytes=10_000_000,
                         resolve=stub_resolver({"img.test": "93.184.216.34"}))
    return SyncDescriber(model, images, ModelSettings(), policy, timeout_s=30, metrics=GatewayMetrics(),
                         clock=utc_now)


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def test_a_translation_cut_off_by_its_output_budget_goes_again_with_more_room() -> None:
    # The batch stage doubles the room of a cut-off translation; the synchronous path failed the
    # lot at once and threw away the English description it had paid for.
    budgets: list[int] = []

    def openai_api(request: httpx2.Request) -> httpx2.Response:
        body = orjson.loads(request.content)
        if "text" not in body:  # the vision call
            return httpx2.Response(200, json={"status": "completed", "output": [message("<p>Dented.</p>")]})
        budgets.append(body["max_output_tokens"])
        if len(budgets) == 1:
            return httpx2.Response(200, json={"status": "incomplete", "output": [],
                                              "incomplete_details": {"reason": "max_output_tokens"}})
        return httpx2.Response(200, json={"status": "completed",
                                          "output": [message('{"de": "<p>Verbeult.</p>"}')]})

    async def describe() -> dict[str, Any]:
        return await describer(openai_api).describe(Submission("1.0.0", ("en", "de"), [LOT]))

    lot = asyncio.run(describe())["lots"][0]
    assert lot["status"] == "completed", lot
    assert lot["descriptions"][1] == {"language": "de", "damages": "<p>Verbeult.</p>"}
    assert budgets[1] == 2 * budgets[0]


def test_a_rate_limited_model_is_502_with_a_retry_after_not_shorter_than_openais() -> None:
    """OpenAI asked for 2.5 s (and 0.4 s): the 502 said 2 (and `details.retry_after` 0), rounded
    half to even, so a client that honoured it came back too early."""
    async def describe(asked: str) -> ApiError:
        def openai_api(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(429, headers={"retry-after-ms": asked},
                                   json={"error": {"message": "Rate limit reached", "type": "requests",
                                                   "code": "rate_limit_exceeded", "param": None}})

        try:
            await describer(openai_api).describe(Submission("1.0.0", ("en",), [LOT]))
        except ApiError as refused:
            return refused
        raise AssertionError("no 502")

    for asked, header, detail in (("2500", "3", 3), ("400", "1", 1)):
        refused = asyncio.run(describe(asked))
        assert refused.status == 502 and refused.headers["Retry-After"] == header
        assert refused.body()["details"]["retry_after"] == detail


def test_a_timeout_of_the_model_api_before_the_budget_ends_does_not_say_the_budget_ran_out() -> None:
    """A translation read timed out at once (a client's own timeout): the 504 said the model "did
    not answer within the 30 s budget" after 0.13 s, and with the vision answer paid, no usage."""
    def openai_api(request: httpx2.Request) -> httpx2.Response:
        if "text" not in orjson.loads(request.content):  # the vision call
            return httpx2.Response(200, json={"status": "completed", "output": [message("<p>Dented.</p>")],
                                              "usage": {"input_tokens": 90, "output_tokens": 12}})
        raise httpx2.ReadTimeout("timed out", request=request)

    async def describe() -> ApiError:
        try:
            await describer(openai_api).describe(Submission("1.0.0", ("en", "de"), [LOT]))
        except ApiError as refused:
            return refused
        raise AssertionError("no 504")

    refused = asyncio.run(describe())
    assert refused.status == 504 and refused.code == "OPENAI_TIMEOUT"
    assert refused.message == "The model API timed out before the 30 s budget ran out"
    assert refused.body()["details"]["usage"]["output_tokens"] == 12


def cut_off_vision(answers: int) -> tuple[list[int], Callable[[httpx2.Request], httpx2.Response]]:
    """The vision budgets asked for, and an OpenAI whose first `answers` descriptions are cut off
    at their output budget (each billed 4,000 output tokens), the next one whole."""
    budgets: list[int] = []

    def openai_api(request: httpx2.Request) -> httpx2.Response:
        budgets.append(orjson.loads(request.content)["max_output_tokens"])
        usage = {"input_tokens": 1000, "output_tokens": 4000}
        if len(budgets) > answers:
            return httpx2.Response(200, json={"status": "completed", "output": [message("<p>Dented.</p>")],
                                              "usage": usage})
        return httpx2.Response(200, json={"status": "incomplete", "usage": usage,
                                          "output": [{"type": "reasoning", "summary": []}],
                                          "incomplete_details": {"reason": "max_output_tokens"}})

    return budgets, openai_api


def test_a_description_cut_off_at_its_budget_is_asked_again_with_twice_the_room() -> None:
    # A batch lot is asked again (`vision_retry_room`); a synchronous one failed at once with
    # "the response is incomplete (max_output_tokens)", its images paid for.
    budgets, openai_api = cut_off_vision(1)

    lot = asyncio.run(describer(openai_api).describe(Submission("1.0.0", ("en",), [LOT])))["lots"][0]

    assert budgets == [4000, 8000]
    assert lot["status"] == "completed", lot
    assert lot["descriptions"] == [{"language": "en", "damages": "<p>Dented.</p>"}]
    assert lot["usage"]["output_tokens"] == 8000  # the cut-off answer was billed too


def test_a_description_cut_off_again_with_twice_the_room_fails_the_lot_with_both_answers_usage() -> None:
    budgets, openai_api = cut_off_vision(2)

    lot = asyncio.run(describer(openai_api).describe(Submission("1.0.0", ("en",), [LOT])))["lots"][0]

    assert budgets == [4000, 8000]
    assert lot["status"] == "failed" and "max_output_tokens" in lot["error_message"], lot
    assert lot["processed_images"] == 0
    assert lot["usage"]["output_tokens"] == 8000


def test_a_refusal_naming_an_image_after_one_naming_none_sends_the_suspect_again() -> None:
    # The rear is unreadable. Refused whole without a name, the front was left out; the next
    # refusal named the rear, yet the front stayed out: described from the side alone, the lot
    # listed the front missing, though nothing showed it was bad.
    front, side, rear = (f"https://img.test/{name}.png" for name in ("front", "side", "rear"))
    requests: list[list[str]] = []

    def openai_api(request: httpx2.Request) -> httpx2.Response:
        content = orjson.loads(request.content)["input"][0]["content"]
        sent = [part["image_url"] for part in content if part["type"] == "input_image"]
        requests.append(sent)
        if rear not in sent:
            return httpx2.Response(200, json={"status": "completed", "output": [message("<p>Dented.</p>")]})
        named = front not in sent  # OpenAI names the image only at times
        return httpx2.Response(400, json={"error": {
            "message": f"Error while downloading {rear}." if named else "You uploaded an unsupported image.",
            "type": "invalid_request_error", "param": None, "code": "invalid_image_format"}})

    async def describe() -> dict[str, Any]:
        lot = LotRequest("lot-1", "Camry", (front, side, rear), None)
        return await describer(openai_api).describe(Submission("1.0.0", ("en",), [lot]))

    lot = asyncio.run(describe())["lots"][0]
    assert requests == [[front, side, rear], [side, rear], [front, side]]
    assert lot["status"] == "completed" and lot["missing_images"] == [rear], lot
    assert lot["processed_images"] == 2
