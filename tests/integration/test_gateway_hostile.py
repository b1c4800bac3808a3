"""Hostile and oversized submissions through a real gateway: a clear answer in the contract's format."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, select

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import outbox
from lotlens_common.urls import IPAddress, LookupTryAgain
from tests.integration.gateway_support import Gateway, make_lots, running_gateway
from tests.network_guard import stub_resolver

pytestmark = pytest.mark.integration


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway that refuses loopback URLs (as in production); its webhook hosts resolve to one
    private and one public address (judged at intake, never connected to)."""
    with running_gateway(settings, engine, allow_loopback_urls=False) as running:
        running.deps.resolve = stub_resolver({"hooks.internal.example": "10.1.2.3",
                                              "hooks.example.com": "93.184.215.14"})
        yield running


def error_of(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body: dict[str, Any] = response.json()
    assert {"error", "message", "code"} <= set(body)
    return body


def nested_lots(gateway: Gateway, depth: int, leaf: str = "x") -> bytes:
    """A body whose one lot is `depth` arrays deep, signed as the contract says (its dense form)."""
    inner = b"[" * depth + json.dumps(leaf).encode() + b"]" * depth
    signature = gateway.sign(b"[" + inner + b"]")
    return b'{"signature":"' + signature.encode() + b'","lots":[' + inner + b"]}"


def deep_field_in_a_lot(gateway: Gateway, depth: int) -> bytes:
    """A real lot with an extra field `depth` arrays deep, in a body with spaces (not the dense form)."""
    lots = make_lots(2)
    deep = "[" * depth + "1" + "]" * depth
    dense = json.dumps(lots, separators=(",", ":"), sort_keys=True)
    with_field = dense.replace('{"additional_info"', '{"extra":' + deep + ',"additional_info"', 1)
    spaced = with_field.replace(",", ", ")
    return ('{"signature": "' + gateway.sign(with_field) + '", "lots": ' + spaced + "}").encode()


def test_nesting_deep_enough_to_recurse_is_400_and_the_connection_stays_usable(gateway: Gateway) -> None:
    # Each body is signed: an unsigned one could pass as a 403 and never reach the depth check.
    bodies = (nested_lots(gateway, 1000), nested_lots(gateway, 970), nested_lots(gateway, 900, "a\u0000b"),
              deep_field_in_a_lot(gateway, 990), deep_field_in_a_lot(gateway, 33))
    with httpx2.Client(base_url=gateway.url, timeout=30) as client:
        for body in bodies:
            answer = client.post("/api/v1/generate-descriptions", content=body)
            assert error_of(answer, 400)["code"] == "NESTING_TOO_DEEP", body[:80]
        # The same keep-alive connection answers the next request (sent as from another address:
        # five bodies refused before authentication are five strikes against this one).
        lots = make_lots(2)
        signed = {"signature": gateway.lots_signature(lots), "lots": lots}
        another = {"X-Forwarded-For": "203.0.113.9"}
        assert client.post("/api/v1/generate-descriptions", json=signed, headers=another).status_code == 201


def test_additional_info_over_the_limit_is_422(gateway: Gateway) -> None:
    lots = make_lots(2)
    lots[1]["additional_info"] = "x" * 1_000_000
    body = error_of(gateway.submit(lots), 422)
    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"]["errors"][0] == {"lot_index": 1, "field": "additional_info",
                                            "problem": "longer than 10000 characters"}


def test_a_batch_lot_with_more_images_than_one_model_request_takes_is_422(gateway: Gateway) -> None:
    lots = make_lots(2)
    lots[0]["images"] = [{"url": f"https://img.example.com/{n}.jpg"} for n in range(2000)]
    body = error_of(gateway.submit(lots), 422)
    assert body["details"]["errors"][0]["field"] == "images"


def test_a_lot_id_over_the_limit_is_422(gateway: Gateway) -> None:
    lots = make_lots(2)
    lots[0]["lot_id"] = "x" * 257
    assert error_of(gateway.submit(lots), 422)["details"]["errors"][0]["field"] == "lot_id"


def test_credentials_in_an_image_url_are_422_and_not_stored(gateway: Gateway) -> None:
    lots = make_lots(2)
    lots[0]["images"] = [{"url": "https://user:secret@img.example.com/x.jpg"}]
    body = error_of(gateway.submit(lots), 422)
    assert body["code"] == "INVALID_IMAGE_URLS"


@pytest.mark.parametrize("webhook", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.7/hook",
                                     "http://[::ffff:127.0.0.1]:8080/hook", "https://hooks.internal.example/done"])
def test_a_webhook_the_ssrf_guard_refuses_is_422_at_intake(gateway: Gateway, webhook: str) -> None:
    body = error_of(gateway.submit(make_lots(2, webhook=webhook)), 422)
    assert body["code"] == "INVALID_WEBHOOK_URLS" and body["details"]["invalid_urls"] == [webhook]


def test_a_webhook_on_a_public_name_is_accepted(gateway: Gateway) -> None:
    assert gateway.submit(make_lots(2, webhook="https://hooks.example.com/done")).status_code == 201


def test_a_webhook_host_that_does_not_resolve_is_answered_as_one_on_a_private_address(
        gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    # A name that did not resolve was accepted (201) and one resolving to a private address was
    # 422: submitting a job told any client which of the network's internal names exist. The log
    # still says which it was, for the operators.
    answers = {}
    with caplog.at_level(logging.INFO, logger="lotlens_gateway"):
        for host in ("hooks.internal.example", "nowhere.internal.example"):
            url = f"https://{host}/done"
            body = error_of(gateway.submit(make_lots(2, webhook=url)), 422)
            assert body["code"] == "INVALID_WEBHOOK_URLS" and body["details"]["invalid_urls"] == [url]
            answers[host] = json.dumps(body).replace(host, "<host>")
    assert answers["hooks.internal.example"] == answers["nowhere.internal.example"]
    assert "does not resolve to a public address" in answers["nowhere.internal.example"]
    assert "hooks.internal.example resolves to a private address" in caplog.text
    assert "cannot resolve nowhere.internal.example" in caplog.text


def test_a_webhook_host_whose_lookup_gives_no_answer_yet_is_accepted(gateway: Gateway) -> None:
    # "Try again" is no verdict: the dispatcher judges the host again when it delivers.
    async def try_again(host: str, _port: int) -> list[IPAddress]:
        raise LookupTryAgain(f"cannot resolve {host} now: Temporary failure in name resolution")

    gateway.deps.resolve = try_again
    assert gateway.submit(make_lots(2, webhook="https://hooks.later.example/done")).status_code == 201


def test_webhook_hosts_are_resolved_once_each_and_a_long_refusal_is_listed_in_part(gateway: Gateway) -> None:
    # 2,000 distinct URLs on one host were 2,000 lookups, queued for the executor's few threads
    # under the intake's one DNS timeout.
    asked: list[str] = []
    resolve = gateway.deps.resolve

    async def counting(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return await resolve(host, port)

    gateway.deps.resolve = counting
    lots = make_lots(2000)
    for n, lot in enumerate(lots):
        lot["webhook"] = f"https://hooks.internal.example/jobs/{n}"
    body = error_of(gateway.submit(lots), 422)
    assert asked == ["hooks.internal.example"]
    assert body["code"] == "INVALID_WEBHOOK_URLS" and body["details"]["invalid_count"] == 2000
    assert body["details"]["invalid_urls"] == [lot["webhook"] for lot in lots[:100]]
    # Not the address: with the cluster's resolver, a customer could map its internal names by it.
    reason = "hooks.internal.example does not resolve to a public address"
    assert body["details"]["reasons"] == {lot["webhook"]: reason for lot in lots[:100]}


def test_only_a_jobs_first_webhook_hosts_are_looked_up_at_intake_the_others_at_delivery(
        gateway: Gateway) -> None:
    # Each of 50,000 lots may name its own webhook host: all were looked up at intake, and a job
    # of hosts on a domain whose DNS never answers held the lookup threads everyone's images use.
    # The dispatcher judges every host again when it connects, so the rest wait for it.
    limit = 100  # LOTLENS_MAX_WEBHOOK_HOSTS_CHECKED's default
    names = {f"h{n}.hooks.example": "93.184.215.14" for n in range(limit)}
    resolve = stub_resolver({**names, "hooks.internal.example": "10.1.2.3"})
    asked: list[str] = []

    async def counting(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return await resolve(host, port)

    gateway.deps.resolve = counting
    lots = make_lots(limit + 1)
    for lot, name in zip(lots, [*names, "hooks.internal.example"], strict=True):
        lot["webhook"] = f"https://{name}/done"
    accepted = gateway.submit(lots)
    assert accepted.status_code == 201, accepted.text[:300]
    assert asked == list(names)
    lots[0]["webhook"] = "https://hooks.internal.example/first"  # among the first: still refused
    body = error_of(gateway.submit(lots), 422)
    assert body["code"] == "INVALID_WEBHOOK_URLS"
    assert body["details"]["invalid_urls"] == ["https://hooks.internal.example/first",
                                               "https://hooks.internal.example/done"]


@pytest.mark.parametrize("path", ["/api/v1/generate-descriptions", "/api/v1/test-image-validation"])
def test_a_compressed_body_is_400_saying_so_not_invalid_json(gateway: Gateway, path: str) -> None:
    # An integrator who gzips a 50,000-lot body was told it was "not UTF-8", and looked for the
    # fault in their JSON.
    lots = make_lots(2)
    document = ({"signature": gateway.lots_signature(lots), "lots": lots} if path.endswith("descriptions")
                else {"urls": ["https://img.example.com/a.jpg"]})
    compressed = gzip.compress(json.dumps(document).encode())
    answer = httpx2.post(gateway.url + path, content=compressed, timeout=30,
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                                  "X-Signature": "sha256=" + "0" * 64})
    body = error_of(answer, 400)
    assert body["code"] == "UNSUPPORTED_CONTENT_ENCODING", body
    assert body["details"] == {"content_encoding": "gzip", "supported": ["identity"]}
    assert "uncompressed" in body["message"]


@pytest.mark.parametrize("path", ["/api/v1/generate-descriptions", "/api/v1/test-image-validation"])
def test_a_body_starting_with_a_utf8_byte_order_mark_is_read_as_the_json_after_it(
        gateway: Gateway, path: str) -> None:
    # Windows tools save UTF-8 with a byte order mark (PowerShell 5's `Set-Content -Encoding UTF8`,
    # older Notepad) and `curl -d @batch.json` sends it; RFC 8259 §8.1 lets a parser ignore it. A
    # job was 400 INVALID_JSON "expected '{' at character 0", its body plainly starting with `{`.
    lots = make_lots(2)
    job = path.endswith("descriptions")
    document = ({"signature": gateway.lots_signature(lots), "languages": ["en"], "lots": lots} if job
                else {"urls": ["https://img.example.com/a.jpg"]})
    raw = b"\xef\xbb\xbf" + json.dumps(document).encode()
    headers = {"Content-Type": "application/json"} | ({} if job else {"X-Signature": gateway.sign(raw)})
    answer = httpx2.post(gateway.url + path, content=raw, headers=headers, timeout=30)
    assert answer.status_code == (201 if job else 200), answer.text[:500]


def test_content_encoding_identity_is_the_body_as_it_is(gateway: Gateway) -> None:
    lots = make_lots(2)
    answer = httpx2.post(gateway.url + "/api/v1/generate-descriptions", timeout=30,
                         json={"signature": gateway.lots_signature(lots), "lots": lots},
                         headers={"Content-Encoding": "identity"})
    assert answer.status_code == 201, answer.text[:300]


@pytest.mark.parametrize("path", ["/api/v1/generate-descriptions", "/api/v1/test-image-validation"])
def test_a_client_gone_mid_body_is_a_499_not_a_500(gateway: Gateway, path: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    # Every upload a client dropped (a mobile network, its own timeout on a 50,000-lot body) was
    # logged as an unexpected error with a traceback and counted as a 500 on the dashboard.
    host, port = gateway.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: lotlens\r\nContent-Length: 100000\r\n"
                    "Content-Type: application/json\r\n\r\n".encode() + b'{"lots": [' + b"1," * 1000)
        time.sleep(0.3)
    time.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    metrics = httpx2.get(f"{gateway.ops_url}/metrics", timeout=10).text
    assert f'route="{path}",status="499"}} 1.0' in metrics, metrics
    assert f'route="{path}",status="500"' not in metrics


def test_oversized_trace_headers_are_not_copied_into_every_lot_event(
        gateway: Gateway, engine: Engine) -> None:
    # A 30,000-character x-request-id (within the 32 KiB head limit) went into each lot's event:
    # 61 MB of outbox for a 2,000-lot job whose body is 149 kB, about 1.5 GB for 50,000 lots.
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = gateway.submit(make_lots(3), headers={
        "x-request-id": "r" * 20_000, "tracestate": "v=" + "s" * 10_000, "traceparent": valid})
    assert response.status_code == 201, response.text
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).where(
            outbox.c.job_id == response.json()["job_id"])).scalars().all()
    assert len(rows) == 4 and max(map(len, rows)) < 5_000, [len(row) for row in rows]
    assert all(valid in row for row in rows)  # a well-formed trace context still travels


def test_made_up_http_methods_do_not_grow_the_metrics(gateway: Gateway) -> None:
    # Each method was a new, permanent series: anyone, unsigned, could grow /metrics (and the
    # gateway's memory) without bound, 60 kB a request with long method names.
    for number in range(50):
        response = httpx2.request(f"M{number:05d}", f"{gateway.url}/api/v1/batch-status/x", timeout=10)
        assert response.status_code == 405
    methods = set(re.findall(r'lotlens_http_requests_total\{method="([^"]*)"',
                             httpx2.get(f"{gateway.ops_url}/metrics").text))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}, methods
    assert "other" in methods


def test_a_job_with_a_webhook_per_lot_is_accepted_however_many_distinct_urls(
        gateway: Gateway, engine: Engine) -> None:
    # API.md: `webhook` is per lot. Every distinct URL went into the one JobSubmitted event, and
    # past its 4 MiB the valid job was refused 413 as "Lot None is too large".
    lots = make_lots(2_100)
    for number, lot in enumerate(lots):
        lot["webhook"] = f"https://hooks.example.com/lotlens/{number:05d}?token=" + "t" * 1_950
    response = gateway.submit(lots)
    assert response.status_code == 201, response.text[:300]
    with engine.connect() as conn:
        [submitted] = conn.execute(select(outbox.c.payload).where(
            outbox.c.job_id == response.json()["job_id"], outbox.c.event_type == "JobSubmitted")).scalars()
    event = json.loads(submitted)["data"]
    assert event["webhook_urls_total"] == 2_100
    assert event["webhook_urls"] == [lot["webhook"] for lot in lots[:len(event["webhook_urls"])]]
    assert 0 < len(event["webhook_urls"]) < 2_100
