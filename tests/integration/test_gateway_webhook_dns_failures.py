"""The gateway's own DNS failing is no verdict on a webhook host: through a real gateway on the
system resolver's path, with `socket.getaddrinfo` replaced (no query leaves the machine)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.urls import resolve_host
from tests.integration.gateway_support import Gateway, make_lots, running_gateway

pytestmark = pytest.mark.integration

# getaddrinfo's answer for each name: the resolver's errors, as glibc reports them.
FAILURES = {"fail.example": socket.EAI_FAIL, "system.example": socket.EAI_SYSTEM,
            "memory.example": socket.EAI_MEMORY, "nowhere.example": socket.EAI_NONAME,
            "nodata.example": socket.EAI_NODATA}


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    replaced = socket.getaddrinfo

    def failing(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in FAILURES:
            raise socket.gaierror(FAILURES[name], f"resolver error for {name}")
        return replaced(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    with running_gateway(settings, engine, resolve=resolve_host, allow_loopback_urls=False) as running:
        yield running


@pytest.mark.parametrize("host", ["fail.example", "system.example", "memory.example"])
def test_a_webhook_host_the_gateways_resolver_fails_on_is_accepted(
        gateway: Gateway, host: str, caplog: pytest.LogCaptureFixture) -> None:
    # EAI_FAIL, EAI_SYSTEM and EAI_MEMORY say nothing about the name: they were read as "does
    # not resolve", and every job with a webhook was 422 INVALID_WEBHOOK_URLS.
    with caplog.at_level(logging.INFO, logger="lotlens_gateway"):
        response = gateway.submit(make_lots(2, webhook=f"https://{host}/done"))
    assert response.status_code == 201, response.text
    assert f"cannot judge {host} now" in caplog.text


@pytest.mark.parametrize("host", ["nowhere.example", "nodata.example"])
def test_a_webhook_host_with_no_such_name_is_still_refused(gateway: Gateway, host: str) -> None:
    response = gateway.submit(make_lots(2, webhook=f"https://{host}/done"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "INVALID_WEBHOOK_URLS"
