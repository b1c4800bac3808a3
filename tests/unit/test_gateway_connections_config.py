"""The gateway's uvicorn configuration carries its connection limits (as `__main__` serves it)."""

from __future__ import annotations

import h11
import pytest
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.connections import LimitedH11Protocol, head_bytes, server_config


def test_server_config_uses_the_limited_protocol_and_the_settings() -> None:
    settings = GatewaySettings(clients={"acme": SecretStr("acme-key-" + "0" * 32)}, max_header_bytes=4096,
                               header_timeout_s=2.5, keep_alive_timeout_s=3, gateway_port=18123)
    config = server_config(FastAPI(), settings, log_config=None)
    assert isinstance(config.http, type) and issubclass(config.http, LimitedH11Protocol)
    assert config.http.head_timeout_s == 2.5
    assert (config.h11_max_incomplete_event_size, config.timeout_keep_alive, config.port) == (4096, 3, 18123)
    # uvloop is installed (for the stand-in): `auto` would run the protocol's timers on it untested.
    assert config.loop == "asyncio"


def test_defaults_are_the_documented_limits() -> None:
    settings = GatewaySettings(clients={"acme": SecretStr("acme-key-" + "0" * 32)})
    assert (settings.max_header_bytes, settings.header_timeout_s, settings.body_gap_timeout_s,
            settings.body_timeout_s, settings.job_body_timeout_s,
            settings.keep_alive_timeout_s) == (32 * 1024, 10.0, 15.0, 120.0, 300.0, 75)


def test_head_bytes_is_the_size_of_the_head_as_sent() -> None:
    raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Pad: abc\r\n\r\n"
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    request = connection.next_event()
    assert isinstance(request, h11.Request)
    assert head_bytes(request) == len(raw)


def test_an_event_size_kafka_could_not_take_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # LOTLENS_MAX_EVENT_BYTES=10485760 ("the topics take 10 MB") was accepted: a lot just under it
    # got its 201, and the relay retried its event, with key and headers over Kafka's limit, forever.
    monkeypatch.setenv("LOTLENS_MAX_EVENT_BYTES", str(10 * 1024 * 1024))
    with pytest.raises(ValidationError, match="max_event_bytes"):
        GatewaySettings(clients={"acme": SecretStr("acme-key-" + "0" * 32)})
