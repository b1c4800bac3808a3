"""Job bodies from an address whose bodies keep failing before authentication get 429 unread,
so a sender without a key cannot keep the intake slot busy; other addresses and small bodies
are untouched. The address is the one uvicorn trusts from X-Forwarded-For (loopback peers here)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from sqlalchemy import Engine, text

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, make_lots, running_gateway
from tests.integration.raw_http import answer_of, connect, read_to_close, trickle

pytestmark = pytest.mark.integration

STRANGER, NEIGHBOUR = "203.0.113.7", "203.0.113.8"


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def _post(gw: Gateway, body: bytes, address: str) -> httpx2.Response:
    return httpx2.post(f"{gw.url}/api/v1/generate-descriptions", content=body,
                       headers={"Content-Type": "application/json", **_from(address)}, timeout=60)


def _jobs_written(engine: Engine, client_id: str) -> int:
    with engine.connect() as conn:
        written = text("SELECT count(DISTINCT job_id) FROM outbox WHERE client_id = :c")
        return int(conn.execute(written, {"c": client_id}).scalar_one())


def test_an_address_whose_job_bodies_fail_before_authentication_is_refused_unread(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, intake_strikes_limit=2, max_lot_bytes=2000) as gw:
        # Two strikes: a job signed with a key nobody has, and a job body that is not JSON.
        assert gw.submit(make_lots(30), key="not-a-client-key", headers=_from(STRANGER)).status_code == 403
        assert _post(gw, b'{"lots": [' + b'{"lot_id": "x"},' * 300, STRANGER).status_code == 400

        refused = gw.submit(make_lots(30), headers=_from(STRANGER))
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert body["code"] == "RATE_LIMIT_EXCEEDED"
        assert body["details"]["reason"] == "failed_before_authentication"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Unread: 5 MB that are not JSON get the same 429, not a 400.
        junk = _post(gw, b"[" * 5_000_000, STRANGER)
        assert (junk.status_code, junk.json()["code"]) == (429, "RATE_LIMIT_EXCEEDED")
        assert gw.deps.metrics.registry.get_sample_value("lotlens_intake_struck_out_total") == 2
        assert _jobs_written(engine, gw.client_id) == 0

        # A body of one lot's size is refused too (its signature costs as much to check).
        assert gw.submit(make_lots(1), headers=_from(STRANGER)).status_code == 429
        # Another address, and the loopback peer itself, are not affected.
        assert gw.submit(make_lots(30), headers=_from(NEIGHBOUR)).status_code == 201
        assert gw.submit(make_lots(30)).status_code == 201
        assert _jobs_written(engine, gw.client_id) == 2


def test_an_address_whose_small_bodies_fail_their_signature_is_refused_unread(
        settings: ServiceSettings, engine: Engine) -> None:
    """A body of one lot's size took no slot and was never counted: an address without a key could
    send unsigned 1 MiB bodies back to back, each 0.4-0.9 CPU-s of the gateway's before its 403."""
    with running_gateway(settings, engine, intake_strikes_limit=2) as gw:
        for _ in range(2):
            assert gw.submit(make_lots(1), key="not-a-client-key", headers=_from(STRANGER)).status_code == 403
        refused = gw.submit(make_lots(1), key="not-a-client-key", headers=_from(STRANGER))
        assert refused.status_code == 429, refused.text
        assert refused.json()["details"]["reason"] == "failed_before_authentication"
        unread = _post(gw, b"[" * 500_000, STRANGER)  # not JSON: refused unread, not a 400
        assert (unread.status_code, unread.json()["code"]) == (429, "RATE_LIMIT_EXCEEDED")
        assert gw.submit(make_lots(1), key="not-a-client-key", headers=_from(NEIGHBOUR)).status_code == 403


def test_authenticated_jobs_refused_for_what_they_hold_are_no_strikes(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, intake_strikes_limit=1, max_lot_bytes=2000) as gw:
        # Duplicate lot ids: 409 after authentication; the client is known, so no strike.
        lots = make_lots(30)
        for _ in range(3):
            assert gw.submit(lots + lots[:1], headers=_from(STRANGER)).status_code == 409
        assert gw.submit(make_lots(30), headers=_from(STRANGER)).status_code == 201


def test_a_struck_out_address_asking_to_continue_gets_its_429_before_sending_the_body(
        settings: ServiceSettings, engine: Engine) -> None:
    """curl asks `Expect: 100-continue` before a big body: the gateway said 100 Continue and took
    the whole upload (up to 64 MB) only to refuse it; RFC 9110 10.1.1 lets it answer at once."""
    with running_gateway(settings, engine, intake_strikes_limit=1, max_lot_bytes=2000) as gw:
        assert gw.submit(make_lots(30), key="not-a-client-key", headers=_from(STRANGER)).status_code == 403
        address = urlsplit(gw.url)
        target = (address.hostname or "127.0.0.1", address.port or 80)
        with socket.create_connection(target, timeout=10) as sock:
            sock.sendall(b"POST /api/v1/generate-descriptions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 5000000\r\n"
                         b"Expect: 100-continue\r\nX-Forwarded-For: " + STRANGER.encode() + b"\r\n\r\n")
            first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 429 "), first[:200]


def _job_head(address: str, declared: int) -> bytes:
    return (f"POST /api/v1/generate-descriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\nX-Forwarded-For: {address}\r\n\r\n").encode()


def test_job_bodies_refused_while_they_are_read_are_strikes(settings: ServiceSettings,
                                                            engine: Engine) -> None:
    """A 408, 413 or 400 of the body reader was raised before the strikes were counted: an address
    could time out job bodies for ever (each holding one of the intake's admissions) and was never
    refused; the strikes stayed empty."""
    with running_gateway(settings, engine, intake_strikes_limit=3, max_lot_bytes=2000, max_body_bytes=100_000,
                         body_gap_timeout_s=1.0) as gw:
        with connect(gw) as sock:  # a body that stops arriving
            sock.sendall(_job_head(STRANGER, 90_000) + b'{"lots":[')
            status, _, body = answer_of(read_to_close(sock))
        assert (status, body["code"]) == (408, "REQUEST_TIMEOUT")
        too_big = _post(gw, b"[" * 150_000, STRANGER)
        assert (too_big.status_code, too_big.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
        lots = make_lots(300)
        signed = gzip.compress(json.dumps({"signature": gw.lots_signature(lots), "lots": lots}).encode())
        assert len(signed) > 2000  # a job body's size, compressed
        compressed = httpx2.post(f"{gw.url}/api/v1/generate-descriptions", content=signed,
                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                                          **_from(STRANGER)}, timeout=60)
        assert (compressed.status_code, compressed.json()["code"]) == (400, "UNSUPPORTED_CONTENT_ENCODING")

        refused = gw.submit(make_lots(30), headers=_from(STRANGER))
        assert refused.status_code == 429, refused.text
        assert refused.json()["details"]["reason"] == "failed_before_authentication"
        assert gw.submit(make_lots(30), headers=_from(NEIGHBOUR)).status_code == 201


def test_job_bodies_trickled_to_hold_the_intake_are_408_and_a_signed_job_gets_in(
        settings: ServiceSettings, engine: Engine) -> None:
    """Two connections trickling a byte just under the gap timeout held both of the intake's
    admissions until the total bound (`job_body_timeout_s`): a signed job got 503 INTAKE_BUSY all along,
    and the reconnecting sender was never refused. Now a job body must keep a minimum rate once
    its first seconds are over, and each refusal is a strike. (One address now holds only one of
    two admissions: its second body is read and dropped, then 503, or 408 when it stalls.)"""
    limits: dict[str, Any] = {
        "intake_slots": 1, "intake_waiting": 1, "intake_strikes_limit": 2, "max_lot_bytes": 2000,
        "body_gap_timeout_s": 2.0, "job_body_timeout_s": 60.0,
        "job_body_min_bytes_per_s": 1000, "job_body_min_rate_after_s": 1.0}
    with running_gateway(settings, engine, **limits) as gw:
        answers: list[bytes] = []

        def attack() -> None:
            with connect(gw) as sock:
                # Declared short enough that the flat floor is the one it must keep.
                sock.sendall(_job_head(STRANGER, 50_000))
                answers.append(trickle(sock, b" ", every_s=0.5))  # gives up after 20 s

        attackers = [threading.Thread(target=attack) for _ in range(2)]
        for attacker in attackers:
            attacker.start()
        for attacker in attackers:
            attacker.join()
        for raw in answers:  # well before the 60 s total bound
            assert raw, "the trickled job body was still being read after 20 s"
            status, _, body = answer_of(raw)
            assert (status, body["code"]) == (408, "REQUEST_TIMEOUT"), body
            assert body["details"]["min_bytes_per_s"] == 1000
        # The sender comes back: struck out, its body is refused unread and takes no admission.
        refused = gw.submit(make_lots(30), headers=_from(STRANGER))
        assert refused.status_code == 429, refused.text
        assert refused.json()["details"]["reason"] == "failed_before_authentication"
        assert gw.submit(make_lots(200), headers=_from(NEIGHBOUR)).status_code == 201


def _trickle_job(gw: Gateway, address: str, declared: int, answers: list[bytes]) -> None:
    """A job body declared `declared` bytes long, sent at about 5 KB/s until the gateway answers."""
    with connect(gw) as sock:
        sock.sendall(_job_head(address, declared) + b'{"lots":[')
        answers.append(trickle(sock, b" " * 500, every_s=0.1))


def test_a_job_body_too_slow_to_arrive_within_the_body_timeout_is_cut_once_its_first_seconds_are_over(
        settings: ServiceSettings, engine: Engine) -> None:
    """A 150 MB body at 5 KB/s kept over the 4096 B/s floor, so it held an admission until
    `job_body_timeout_s` (300 s) and its 408; the floor of a declared body is now its length over
    that timeout."""
    limits: dict[str, Any] = {"max_lot_bytes": 2000, "job_body_timeout_s": 60.0,
                              "job_body_min_rate_after_s": 1.0}
    with running_gateway(settings, engine, **limits) as gw:
        answers: list[bytes] = []
        _trickle_job(gw, STRANGER, 150_000_000, answers)
        assert answers[0], "the trickled job body was still being read after 20 s"
        status, _, body = answer_of(answers[0])
        assert (status, body["code"]) == (408, "REQUEST_TIMEOUT"), body
        assert body["details"]["min_bytes_per_s"] == 2_500_000


def test_one_address_trickling_job_bodies_cannot_hold_every_admission(
        settings: ServiceSettings, engine: Engine) -> None:
    """Two trickled job bodies from one address held both admissions (one slot, one waiting) until
    their 408: a signed job from anyone else got 503 INTAKE_BUSY all along. An address now holds
    all admissions but one."""
    limits: dict[str, Any] = {"intake_slots": 1, "intake_waiting": 1, "job_body_timeout_s": 3.0}
    with running_gateway(settings, engine, **limits) as gw:
        answers: list[bytes] = []
        attackers = [threading.Thread(target=_trickle_job, args=(gw, STRANGER, 150_000_000, answers))
                     for _ in range(2)]
        for attacker in attackers:
            attacker.start()
        time.sleep(0.5)  # both bodies are being read
        lots = make_lots(7_500, images=3)
        assert len(json.dumps(lots)) > 2 * 1024 * 1024
        signed = gw.submit(lots, headers=_from(NEIGHBOUR))
        assert signed.status_code == 201, signed.text
        for attacker in attackers:
            attacker.join()
        for raw in answers:
            status, _, body = answer_of(raw)
            assert (status, body["code"]) in {(408, "REQUEST_TIMEOUT"), (503, "INTAKE_BUSY")}, body
