"""The gateway's model API check (`/health` → `openai`, `lotlens_openai_reachable`): a refused key,
an API that cannot be reached and one that answers are told apart, and the gauge follows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import openai
from prometheus_client import CollectorRegistry, Gauge

from lotlens_gateway.openai_probe import OpenAIProbe
from tests.servers import free_port, serve


@contextmanager
def model_api(status: int) -> Iterator[str]:
    """A loopback model API answering every batch listing with `status` (its base URL)."""
    body = ({"object": "list", "data": [], "has_more": False} if status == 200 else
            {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                       "code": "invalid_api_key"}})

    class Batches(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            """Say nothing: the test reads the probe, not the access log."""

    with serve(Batches) as url:
        yield f"{url}/v1"


async def _first_check(base_url: str, gauge: Gauge) -> str:
    """What a probe of the API at `base_url` reports once its first check has ended."""
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url)
    # A clock that never moves: the first check is the only one.
    probe = OpenAIProbe(client, gauge, timeout_s=5.0, clock=lambda: 0.0)
    status = probe.status()
    for _ in range(200):
        if status != "unknown":
            break
        await asyncio.sleep(0.05)
        status = probe.status()
    await client.close()
    return status


def _check(base_url: str, gauge: Gauge, registry: CollectorRegistry) -> tuple[str, float | None]:
    status = asyncio.run(_first_check(base_url, gauge))
    return status, registry.get_sample_value("lotlens_openai_reachable")


def test_a_refused_key_an_unreachable_api_and_an_answering_one_are_told_apart() -> None:
    # `/health` accepted any of the four words: a probe that called every failure "unreachable"
    # sent on-call to the network when the key had been revoked.
    registry = CollectorRegistry()
    gauge = Gauge("lotlens_openai_reachable", "1 when the model API answered", registry=registry)
    with model_api(200) as answering, model_api(401) as refusing:
        assert _check(answering, gauge, registry) == ("reachable", 1.0)
        assert _check(refusing, gauge, registry) == ("unauthorized", 0.0)
        assert _check(answering, gauge, registry) == ("reachable", 1.0)
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: the connection is refused
    assert _check(closed, gauge, registry) == ("unreachable", 0.0)
