"""The service's OpenAI key stays out of what operators and traces see: a key read with a trailing
newline (`kubectl create secret --from-file`, a vault file) is stripped at start, one with
whitespace inside is refused there, and a failed call's error never carries an Authorization value.

The calls go through the real SDK and HTTP/1.1 connection (h11 checks the header) to an in-memory
network backend: nothing is connected to.
"""

from __future__ import annotations

import asyncio
import logging

import httpcore2
import httpx2
import openai
import pytest
from pydantic import ValidationError

from lotlens_common.logs import JsonFormatter
from lotlens_common.model.errors import ModelError, error_kind
from lotlens_common.model.openai_client import OpenAIBatches, call_responses
from lotlens_common.settings import OpenAISettings

KEY = "sk-proj-Zq8v1Xr4Tn6Wm2Lp9Hs3Kd7Fb5Gc0Jy"
ANSWER = b'{"id": "resp_1", "object": "response", "status": "completed", "output": []}'


def offline_client(api_key: str) -> openai.AsyncOpenAI:
    """The SDK over a real connection pool whose network is a canned HTTP answer."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(ANSWER), ANSWER)
    transport = httpx2.AsyncHTTPTransport()
    transport._pool = httpcore2.AsyncConnectionPool(network_backend=httpcore2.AsyncMockBackend([answer]))
    return openai.AsyncOpenAI(api_key=api_key, base_url="http://127.0.0.1:9/v1", max_retries=0,
                              http_client=httpx2.AsyncClient(transport=transport))


def test_the_offline_client_answers_with_a_clean_key() -> None:
    # The harness itself: a well-formed key gets the canned answer, so the failure below is the key's.
    answer = asyncio.run(call_responses(offline_client(KEY), {"model": "m", "input": "x"}, max_attempts=1))
    assert answer["id"] == "resp_1"


@pytest.mark.parametrize("call", ["responses", "batches"])
def test_a_call_refused_over_its_key_does_not_carry_the_key(call: str) -> None:
    client = offline_client(KEY + "\n")

    async def failing() -> object:
        if call == "responses":
            return await call_responses(client, {"model": "m", "input": "x"}, max_attempts=1)
        return await OpenAIBatches(client).retrieve_batch("batch_1")

    with pytest.raises(ModelError) as failed:
        asyncio.run(failing())
    record = logging.LogRecord("lotlens", logging.ERROR, __file__, 1, "the call failed: %s",
                               (failed.value,), (type(failed.value), failed.value, failed.tb))
    logged = JsonFormatter().format(record)
    for shown in (str(failed.value), logged):
        assert KEY not in shown and KEY[8:20] not in shown
    assert "Bearer [redacted]" in str(failed.value)
    assert error_kind(failed.value) == "unavailable"


@pytest.mark.parametrize("read", [KEY + "\n", KEY + "\r\n", f"  {KEY}\t"])
def test_a_key_read_with_surrounding_whitespace_is_stripped(monkeypatch: pytest.MonkeyPatch,
                                                            read: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", read)
    key = OpenAISettings().api_key
    assert key is not None and key.get_secret_value() == KEY
    assert KEY not in repr(OpenAISettings())


@pytest.mark.parametrize("read", [f"{KEY[:10]}\n{KEY[10:]}", f"{KEY} {KEY}", f"{KEY}\x07"])
def test_a_key_with_whitespace_or_control_characters_inside_is_refused_at_start(
        monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", read)
    with pytest.raises(ValidationError) as refused:
        OpenAISettings()
    assert "OPENAI_API_KEY holds whitespace or control characters" in str(refused.value)
    assert KEY[:8] not in str(refused.value) and KEY[-8:] not in str(refused.value)


def test_an_empty_key_means_the_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", " \n")
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    model = OpenAISettings()
    assert model.api_key is None and model.base_url is None
