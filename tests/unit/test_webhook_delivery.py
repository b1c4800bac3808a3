"""One webhook attempt judged by the contract; the SSRF guard; the webhook signature headers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest

from lotlens_common.redaction import REDACTED
from lotlens_common.signing import webhook_headers
from lotlens_webhook_dispatcher.delivery import post_webhook
from lotlens_webhook_dispatcher.guard import GuardedTransport

URL = "https://hooks.example.com/lotlens"


def _transport(answer: httpx2.Response | Exception) -> httpx2.BaseTransport:
    def handle(request: httpx2.Request) -> httpx2.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer
    return httpx2.MockTransport(handle)


def _post(answer: httpx2.Response | Exception, body_chars: int = 2000):
    return post_webhook(_transport(answer), URL, b"{}", {"Content-Type": "application/json"}, 5.0, body_chars)


@pytest.mark.parametrize("code", [200, 201, 202])
def test_200_201_and_202_are_success(code):
    outcome = _post(httpx2.Response(code, text="ok"))
    assert outcome.succeeded and outcome.status_code == code and outcome.error is None


@pytest.mark.parametrize("code", [204, 400, 404, 429, 500, 503])
def test_every_other_code_is_a_failure_worth_retrying(code):
    outcome = _post(httpx2.Response(code))
    assert not outcome.succeeded and not outcome.final and outcome.error == f"HTTP {code}"


def test_a_redirect_is_not_followed_and_fails_the_attempt():
    outcome = _post(httpx2.Response(302, headers={"Location": "http://169.254.169.254/"}))
    assert not outcome.succeeded and outcome.status_code == 302
    assert outcome.error is not None and "not followed" in outcome.error


def test_410_gone_fails_and_asks_for_no_more_attempts():
    outcome = _post(httpx2.Response(410))
    assert not outcome.succeeded and outcome.final


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "file:///etc/passwd", "http:///no-host",
                                 "http://example.com:no-port/", "not a url"])
def test_a_url_that_cannot_be_sent_to_fails_for_good(url):
    outcome = post_webhook(_transport(httpx2.Response(200)), url, b"{}", {}, 5.0)
    assert not outcome.succeeded and outcome.final
    assert outcome.error is not None and outcome.error.startswith("invalid URL")


def test_retry_after_of_the_answer_is_passed_on():
    assert _post(httpx2.Response(503, headers={"Retry-After": "17"})).retry_after_s == 17


def test_a_timeout_and_a_refused_connection_are_failures_with_their_reason():
    timed_out = _post(httpx2.ReadTimeout("slow"))
    refused = _post(httpx2.ConnectError("refused"))
    assert not timed_out.succeeded and timed_out.error is not None and timed_out.error.startswith("timeout")
    assert not refused.succeeded and refused.error is not None and "ConnectError" in refused.error


def test_the_recorded_response_body_is_truncated():
    outcome = _post(httpx2.Response(500, text="é" * 5000), body_chars=100)
    assert outcome.response_body == "é" * 100


def test_a_host_resolving_to_a_private_address_is_refused_before_connecting():
    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    with GuardedTransport(False, httpx2.Limits(max_connections=4), resolve=resolve) as transport:
        outcome = post_webhook(transport, "http://internal.example.com/hook", b"{}", {}, 2.0)
    assert not outcome.succeeded
    # The address stays out: with the cluster's resolver, a customer could map its internal names.
    assert outcome.error is not None
    assert "internal.example.com does not resolve to a public address" in outcome.error
    assert "10.0.0.5" not in outcome.error


@pytest.mark.parametrize(("address", "allow_loopback"), [("127.0.0.1", False), ("169.254.169.254", True),
                                                        ("::ffff:192.168.1.1", True)])
def test_loopback_without_the_switch_and_internal_addresses_always_are_refused(address, allow_loopback):
    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (address, port))]

    with GuardedTransport(allow_loopback, httpx2.Limits(max_connections=4), resolve=resolve) as transport:
        outcome = post_webhook(transport, "http://hooks.example.com/x", b"{}", {}, 2.0)
    # The guard's own refusal: with the guard off, "Connection refused" from the OS must not pass.
    assert not outcome.succeeded and outcome.error is not None
    assert "hooks.example.com does not resolve to a public address" in outcome.error
    assert address not in outcome.error and str(ipaddress.ip_address(address)) not in outcome.error


def test_webhook_headers_carry_the_003_signature_and_standard_webhooks_signatures_for_each_secret():
    body = '{"lots":["Évaluation"]}'.encode()
    new, old = (b"n" * 32, b"o" * 32)
    whsec = ["whsec_" + base64.b64encode(raw).decode() for raw in (new, old)]
    headers = webhook_headers("new-key", whsec, "d-1", 1_754_381_700, body)
    assert headers["X-Signature"] == "sha256=" + hmac.new(b"new-key", body, hashlib.sha256).hexdigest()
    assert headers["webhook-id"] == "d-1" and headers["webhook-timestamp"] == "1754381700"
    expected = [
        "v1," + base64.b64encode(hmac.new(key, b"d-1.1754381700." + body, hashlib.sha256).digest()).decode()
        for key in (new, old)]
    assert headers["webhook-signature"].split(" ") == expected


def test_without_a_webhook_secret_no_standard_signature_is_sent():
    assert list(webhook_headers("key", [], "d-1", 1_754_381_700, b"{}")) == [
        "X-Signature", "webhook-id", "webhook-timestamp"]


def test_a_host_no_resolver_can_be_asked_for_fails_the_attempt_instead_of_breaking_it():
    # Stored before intake refused such hosts. The IDNA codec refuses the name before any query.
    with GuardedTransport(False, httpx2.Limits(max_connections=4)) as transport:
        outcome = post_webhook(transport, "https://hooks..example.com/x", b"{}", {}, 2.0)
    assert not outcome.succeeded and outcome.error is not None
    assert "hooks..example.com does not resolve to a public address" in outcome.error


@contextlib.contextmanager
def _endpoint(answer: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A loopback endpoint for one request: it reads the request, then `answer(connection, stop)`."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            answer(conn, stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _trickling_endpoint(seconds: float) -> contextlib.AbstractContextManager[str]:
    """An endpoint that answers 200, its head one byte every 0.2 s for `seconds`."""
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * int(seconds / 0.2) + b"\r\n"
        for byte in head:
            if stop.wait(0.2):
                return
            conn.sendall(bytes([byte]))
        conn.sendall(b"Content-Length: 0\r\n\r\n")

    return _endpoint(trickle)


def _raw_endpoint(answer: bytes) -> contextlib.AbstractContextManager[str]:
    """An endpoint that sends `answer`, bytes as they are."""
    return _endpoint(lambda conn, _stop: conn.sendall(answer))


def test_an_endpoint_that_trickles_its_answer_is_cut_off_at_the_attempt_timeout():
    # Each byte comes well within the read timeout, so only a deadline for the whole attempt ends
    # it: without one an endpoint held an attempt thread (and its lease) as long as it liked.
    with _trickling_endpoint(seconds=20) as url, \
            GuardedTransport(True, httpx2.Limits(max_connections=4)) as transport:
        started = time.monotonic()
        outcome = post_webhook(transport, url, b"{}", {}, 1.0)
        took = time.monotonic() - started
    assert not outcome.succeeded and outcome.error is not None and outcome.error.startswith("timeout")
    assert took < 3.0, took


def test_a_dns_lookup_that_hangs_is_cut_off_at_the_attempt_timeout():
    # The system resolver retries each name server for seconds (resolv.conf's timeout x attempts):
    # a customer's slow DNS held the attempt thread that long, past the attempt's own timeout.
    release = threading.Event()

    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        release.wait(20)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    with GuardedTransport(True, httpx2.Limits(max_connections=4), resolve=resolve) as transport:
        started = time.monotonic()
        outcome = post_webhook(transport, "http://slow-dns.example.com/hook", b"{}", {}, 1.0)
        took = time.monotonic() - started
    release.set()
    assert not outcome.succeeded and outcome.error is not None, outcome
    assert outcome.error.startswith("timeout"), outcome
    assert took < 3.0, took


@pytest.mark.parametrize("value", [b"\xb2", "١٢".encode(), b"12\xb9", b"-5", b"1.5"])
def test_a_retry_after_that_is_not_ascii_digits_or_a_date_is_ignored_and_the_503_recorded(value):
    # `str.isdigit` says yes to "²" (byte 0xB2 read as Latin-1), which `float` then refuses: the
    # receiver's 503 broke the attempt instead of being recorded and retried on schedule.
    head = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + value + b"\r\nContent-Length: 4\r\n\r\nbusy"
    with _raw_endpoint(head) as url, GuardedTransport(True, httpx2.Limits(max_connections=4)) as transport:
        outcome = post_webhook(transport, url, b"{}", {}, 5.0)
    assert not outcome.succeeded and outcome.status_code == 503 and not outcome.final
    assert outcome.retry_after_s is None


def test_an_answer_with_nul_bytes_is_recorded_without_them():
    # A receiver answering in UTF-16 (as some Windows servers do) sends NUL bytes. PostgreSQL text
    # and jsonb cannot hold a NUL: the attempt's record was refused by the read models and
    # dead-lettered, and the delivery's history lost it.
    body = "server error".encode("utf-16-le")
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(body)
    with _raw_endpoint(head + body) as url, \
            GuardedTransport(True, httpx2.Limits(max_connections=4)) as transport:
        outcome = post_webhook(transport, url, b"{}", {}, 5.0)
    assert outcome.status_code == 500 and outcome.response_body is not None
    assert "\x00" not in outcome.response_body
    assert outcome.response_body.replace("\ufffd", "") == "server error"


def _short_body(conn: socket.socket, _stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok")
    conn.shutdown(socket.SHUT_RDWR)


def _bad_gzip(conn: socket.socket, _stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok")


def _slow_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\no")
    stop.wait(10)


@pytest.mark.parametrize("answer", [_short_body, _bad_gzip, _slow_body])
def test_a_2xx_whose_body_cannot_be_read_is_still_a_delivery(answer):
    # The receiver said 200: it has the webhook. Reading the rest of its answer is only for the
    # history; a body cut short, undecodable or still coming at the deadline made the attempt a
    # failure, and the receiver got the same webhook again.
    with _endpoint(answer) as url, GuardedTransport(True, httpx2.Limits(max_connections=4)) as transport:
        started = time.monotonic()
        outcome = post_webhook(transport, url, b"{}", {}, 1.0)
        took = time.monotonic() - started
    assert outcome.succeeded and outcome.status_code == 200 and outcome.error is None, outcome
    assert took < 3.0, took


def test_a_redirect_to_a_very_long_location_is_recorded_within_the_body_limit():
    location = b"https://x.example/" + b"a" * 60_000
    head = b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
    with _raw_endpoint(head) as url, GuardedTransport(True, httpx2.Limits(max_connections=4)) as transport:
        outcome = post_webhook(transport, url, b"{}", {}, 5.0, body_chars=2000)
    assert outcome.status_code == 302 and outcome.error is not None
    assert outcome.error.startswith("HTTP 302: redirect to https://x.example/aaa")
    assert len(outcome.error) <= 2000, len(outcome.error)


@pytest.mark.parametrize(("location", "named"), [
    (b"http://user:pass@127.0.0.1:9/next?token=secret#secret", "http://127.0.0.1:9/next?[redacted]"),
    (b"/next?token=secret", "/next?[redacted]"),
    (b"ftp://user:pass@127.0.0.1/file", "ftp://127.0.0.1/file"),
    # Paths to httpx2, credentials to a WHATWG parser (browsers, Node): `\` is `/` to it, and
    # a scheme other than the base's needs no `//`. Not named at all.
    (b"https:\\\\user:pass@127.0.0.1:9/next?token=secret", f"redirect to {REDACTED} not followed"),
    (b"\\\\user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
    (b"/\\user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
    (b"https:/user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
    (b"https:user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
    (b"http:///user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
    (b"///user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
    (b"/\t/user:pass@127.0.0.1:9/next", f"redirect to {REDACTED} not followed"),
])
def test_a_redirect_is_recorded_without_the_credentials_its_location_and_body_carry(location, named):
    body = b'<a href="' + location + b'">moved</a>'
    head = (b"HTTP/1.1 302 Found\r\nLocation: " + location
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    limits = httpx2.Limits(max_connections=4)
    with _raw_endpoint(head + body) as url, GuardedTransport(True, limits) as transport:
        outcome = post_webhook(transport, url, b"{}", {}, 5.0)
    assert outcome.error is not None and named in outcome.error, outcome.error
    assert "secret" not in outcome.error and "pass" not in outcome.error
    assert outcome.response_body is None


def test_a_redirect_answered_past_the_timeout_is_recorded_without_its_body():
    # Judged a timeout before the redirect's body was dropped: that body, naming the target with
    # its credentials (Werkzeug's, Django's), was kept in the history.
    def late_redirect(_request: httpx2.Request) -> httpx2.Response:
        time.sleep(0.15)
        return httpx2.Response(302, headers={"Location": "/next?token=secret"},
                               text='<a href="http://user:pass@127.0.0.1:9/next?token=secret">moved</a>')

    outcome = post_webhook(httpx2.MockTransport(late_redirect), URL, b"{}", {}, 0.1)
    assert outcome.status_code == 302 and outcome.error is not None and outcome.error.startswith("timeout")
    assert outcome.response_body is None, outcome.response_body


@pytest.mark.parametrize("first", ["127.0.0.2", "::1"])
def test_a_host_whose_first_address_refuses_is_reached_at_the_next(first):
    # Only the first address was ever tried: a host with one dead A record, or an AAAA record this
    # network cannot route, failed all five attempts, since the order never changes between them.
    def answer(conn: socket.socket, _stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    with _endpoint(answer) as url:
        port = httpx2.URL(url).port

        def resolve(host: str, port_asked: int, **_: object) -> list[tuple[object, ...]]:
            return [(socket.AF_INET6 if ":" in first else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (first, port_asked)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_asked))]

        with GuardedTransport(True, httpx2.Limits(max_connections=4), resolve=resolve) as transport:
            outcome = post_webhook(transport, f"http://hooks.example.com:{port}/hook", b"{}", {}, 5.0)
    assert outcome.succeeded and outcome.status_code == 200, outcome


def test_an_accepted_deliverys_answer_is_not_recorded():
    # It was kept (2,000 characters of the customer's own answer) in webhook_attempts and in the
    # record topic for good, and nothing ever read it.
    outcome = _post(httpx2.Response(200, text='{"received": true, "customer": "Jane Doe"}'))
    assert outcome.succeeded and outcome.response_body is None


def _endless_body(status: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """An endpoint that answers `status` at once, then a chunked body that never ends."""
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nqueued\r\n")
        while not stop.wait(0.2):
            with contextlib.suppress(OSError):  # the dispatcher hung up: it has what it needs
                conn.sendall(b"1\r\n \r\n")

    return answer


@pytest.mark.parametrize(("status", "succeeded"), [(b"200 OK", True), (b"503 Service Unavailable", False)])
def test_an_answer_whose_body_never_ends_frees_the_attempt_soon_after_its_status(status, succeeded):
    # The status decides the attempt; the body is only drained (2xx) or kept for the history.
    # Read until the attempt's deadline, a receiver that acknowledged at once but streamed (or never
    # finished) its body held the attempt thread, its host's and its client's slots for the whole
    # 30 s: four deliveries to that host every 30 s, while the attempt was timed at 2 ms.
    timeout_s = 20.0
    with _endpoint(_endless_body(status)) as url, \
            GuardedTransport(True, httpx2.Limits(max_connections=4)) as transport:
        started = time.monotonic()
        outcome = post_webhook(transport, url, b"{}", {}, timeout_s)
        took = time.monotonic() - started
    assert outcome.succeeded is succeeded and outcome.status_code == int(status[:3]), outcome
    assert outcome.succeeded or (outcome.response_body or "").startswith("queued"), outcome
    assert took < timeout_s / 4, f"the attempt was held {took:.1f} s after its {status.decode()}"
