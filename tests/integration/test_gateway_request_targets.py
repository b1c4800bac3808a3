"""Absolute-form request targets (`GET http://host:port/path HTTP/1.1`), which RFC 9112 3.2.2 says a
server MUST accept, are served as their path: they answered 404, uvicorn taking the whole URL for
the path. Sent over a raw socket: no HTTP client sends this form to a server it is not told is a
proxy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots
from tests.integration.raw_http import answer_of, connect, read_to_close

pytestmark = pytest.mark.integration


def sent(gateway: Gateway, target: str, signed: str, host: str | None = None) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET of a raw target, signed over `signed`."""
    head = (f"GET {target} HTTP/1.1\r\nHost: {host or urlsplit(gateway.url).netloc}\r\n"
            f"X-Signature: {gateway.sign(signed)}\r\nConnection: close\r\n\r\n")
    with connect(gateway) as sock:
        sock.sendall(head.encode("ascii"))
        status, _headers, body = answer_of(read_to_close(sock))
    return status, body


def test_a_status_poll_with_an_absolute_form_target_is_answered_as_its_path(
        gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    path = f"/api/v1/batch-status/{job_id}"
    assert sent(gateway, path, job_id)[0] == 200  # origin form, as every client sends it
    for target in (f"{gateway.url}{path}", f"HTTP://{urlsplit(gateway.url).netloc}{path}"):
        status, body = sent(gateway, target, job_id)
        assert (status, body.get("job_id"), body.get("status")) == (200, job_id, "completed"), (target, body)
    # The target's authority names the host (RFC 9112 3.2.2), whatever the Host header says.
    status, body = sent(gateway, f"http://lotlens.example.com{path}", job_id, host="other.example")
    assert (status, body.get("job_id")) == (200, job_id), body


def test_the_job_listing_with_an_absolute_form_target_checks_the_signature_over_its_query(
        gateway: Gateway, engine: Engine) -> None:
    now = datetime.now(UTC)
    older, _newer = (insert_finished_job(engine, gateway.client_id, make_lots(1), ["en"],
                                         created_at=now - timedelta(hours=hours)) for hours in (2, 1))
    status, body = sent(gateway, f"{gateway.url}/api/v1/batch-jobs?limit=1&offset=1", "limit=1&offset=1")
    assert status == 200, body
    assert [job["id"] for job in body["jobs"]] == [older]
    status, body = sent(gateway, f"{gateway.url}/api/v1/batch-jobs?limit=1&offset=1", "limit=1")
    assert (status, body["code"]) == (403, "INVALID_SIGNATURE")
    assert body["details"]["signed_message_here"] == "limit=1&offset=1"


def test_an_absolute_form_target_of_an_unknown_path_or_with_userinfo_is_the_contracts_404(
        gateway: Gateway) -> None:
    netloc = urlsplit(gateway.url).netloc
    for target in (f"http://{netloc}/api/v1/nothing-here", f"http://user@{netloc}/api/v1/batch-status/x"):
        status, body = sent(gateway, target, "x")
        assert status == 404 and set(body) >= {"error", "message", "code"}, (target, body)
