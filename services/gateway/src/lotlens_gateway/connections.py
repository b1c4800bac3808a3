"""The gateway's HTTP connections: uvicorn's configuration and a small h11 protocol subclass.

uvicorn (0.54, h11) bounds an incomplete request head only by size, answers it with a 400 and a
reset, and never times a head out. The subclass relies on these uvicorn behaviours (each covered by
tests/integration/test_gateway_connections.py): `H11Protocol.__init__` makes `self.conn`, an
`h11.Connection`, and `handle_events` calls its `next_event()`, answering a `RemoteProtocolError`
through `send_400_response(msg)`; `data_received`, `on_response_complete`, `shutdown` and
`connection_lost` are the protocol's hooks; its `loop`, `config`, `timeout_keep_alive` and
`_unset_keepalive_if_required()` are used as they are; `timeout_keep_alive` closes a connection
idle between requests; an answer with `Connection: close` (the body timeouts' 408) is followed by
`self.transport.close()` on the protocol's `transport`, which the subclass wraps; the transport
calls `pause_writing`/`resume_writing` on its high and low water marks, and uvicorn's `send` waits
while writing is paused, and ends the app's answer once `connection_lost` says the client left
(the send-stall watch, tests/integration/test_gateway_downloads.py). An upgrade that changes any
of these fails those tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from email.utils import formatdate
from typing import Any, cast

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.errors import TITLES

log = logging.getLogger(__name__)

class _MeasuredConnection(h11.Connection):
    """An h11 server connection that also measures heads arriving whole and keeps why it refused one."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.refusal = 400

    def next_event(self) -> Any:
        """h11's next event; a head over the limit raises (431) even when it arrived in one read."""
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refusal = exc.error_status_hint
            raise
        # h11 bounds only a head still incomplete in its buffer: one read of up to 256 KiB holding a
        # whole head passes it, so the parsed head is measured here (as sent, but for spacing).
        if isinstance(event, h11.Request) and head_bytes(event) > self.max_head_bytes:
            self.refusal = 431
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        if isinstance(event, h11.Request) and _framed_twice(event):
            # RFC 9112 6.1: refuse, or close after answering. h11 framed it by the chunks and kept
            # the connection: behind a proxy framing by Content-Length, a request smuggled in the
            # body would have been served as the next one.
            raise h11.RemoteProtocolError("a request framed by both Content-Length and "
                                          "Transfer-Encoding", error_status_hint=400)
        return event


def _framed_twice(request: h11.Request) -> bool:
    names = {name for name, _ in request.headers}
    return b"content-length" in names and b"transfer-encoding" in names


def head_bytes(request: h11.Request) -> int:
    """The size of a request line and its headers."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items()) + 2


def raw_answer(status: int, code: str, message: str, details: dict[str, Any]) -> bytes:
    """A complete `Connection: close` HTTP answer with the contract's error body."""
    body = json.dumps({"error": TITLES.get(status, "Error"), "message": message, "code": code,
                       "details": details}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ndate: {formatdate(usegmt=True)}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


# How long a refused connection's leftover bytes are read and dropped before it is closed (at most
# the keep-alive timeout): nginx's own `lingering_timeout`. It was the keep-alive timeout itself,
# which is now 75 s to outlast front proxies' idle connections: a refused upload would be drained that long.
LINGER_S = 5.0

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


class _GentleTransport:
    """The connection's transport, whose `close` lingers while part of a request body is unread.

    uvicorn closes the transport right after an answer that says `Connection: close`; with bytes
    of the request still unread the kernel then resets the connection, and a client still sending
    (a trickled body answered 408) lost the answer to the reset about half the time.
    """

    def __init__(self, transport: asyncio.Transport, protocol: LimitedH11Protocol) -> None:
        self._transport, self._protocol = transport, protocol

    def close(self) -> None:
        if not self._protocol.linger_instead_of_closing():
            self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a head must be complete within `head_timeout_s` (else 408), a
    head over the size limit is a 431, refusals close gently (the client reads the answer), and a
    client that takes no byte of its answer for `send_stall_timeout_s` is disconnected."""

    head_timeout_s = 10.0
    send_stall_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._measured = _MeasuredConnection(self.config.h11_max_incomplete_event_size or 32 * 1024)
        self.conn = self._measured
        self._head_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._unsent = 0
        self._progress_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head's clock at once: a connection that sends nothing is closed too."""
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, _GentleTransport(transport, self))
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        """Discard what arrives after a refusal; otherwise time the head from its first byte."""
        if self._closing:
            return
        super().data_received(data)
        if self._closing:
            return
        awaiting_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not awaiting_head:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def send_400_response(self, msg: str) -> None:
        """A malformed head is a 400, one over the size limit a 431, in the contract's format."""
        if self._measured.refusal == 431:
            limit = self.config.h11_max_incomplete_event_size
            message = f"The request line and headers exceed {limit} bytes"
            self._refuse(raw_answer(431, "HEADERS_TOO_LARGE", message, {"max_header_bytes": limit}))
        else:
            self._refuse(raw_answer(400, "INVALID_HTTP", msg, {}))

    def on_response_complete(self) -> None:
        """An answer given before the request's body all arrived ends the connection.

        uvicorn would keep reading and discarding the rest, and every byte of it would restart the
        keep-alive timer: a client trickling a body to a route that never reads it would hold the
        connection for good.
        """
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._refuse(b"")

    def linger_instead_of_closing(self) -> bool:
        """Called for a close: when part of the request body is unread, close gently instead."""
        if self._closing or self.conn.their_state is not h11.SEND_BODY:
            return False
        self._refuse(b"")
        return True

    def shutdown(self) -> None:
        """On server exit: close a refused connection at once (its h11 state is beyond use)."""
        if self._closing:
            self.transport.close()
        else:
            super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the head's clock and the stall watch."""
        self._stop_head_timer()
        self._stop_stall_watch()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's buffer is full (the client takes the answer slower than it comes): from now
        on the client must take some of it every `send_stall_timeout_s`.

        A client that read nothing more kept its answer's buffer, the answer's rendered chunk and
        its download place for good: uvicorn waits on a paused transport without a limit, and
        closing one whose buffer is not empty waits for the client too."""
        super().pause_writing()
        if self._stall_timer is None:
            self._unsent = self.transport.get_write_buffer_size()
            self._progress_at = self.loop.time()
            self._stall_timer = self.loop.call_later(self.send_stall_timeout_s / 4, self._check_stall)

    def resume_writing(self) -> None:
        """The client took enough: stop watching."""
        super().resume_writing()
        self._stop_stall_watch()

    def _check_stall(self) -> None:
        # Progress is the transport's buffer shrinking: bytes the kernel took because the client read.
        unsent, now = self.transport.get_write_buffer_size(), self.loop.time()
        if unsent < self._unsent:
            self._progress_at = now
        self._unsent = unsent
        if now - self._progress_at < self.send_stall_timeout_s:
            self._stall_timer = self.loop.call_later(self.send_stall_timeout_s / 4, self._check_stall)
            return
        self._stall_timer = None
        log.warning("closing a connection whose client took no byte of its answer for %g s (%d bytes unsent)",
                    self.send_stall_timeout_s, unsent)
        # An abort drops the buffer; uvicorn then tells the app the client left, which ends the answer.
        self.transport.abort()

    def _stop_stall_watch(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if not self.conn.trailing_data[0]:
            self._refuse(b"")  # nothing of a head arrived: close silently, like an idle connection
            return
        self._refuse(raw_answer(408, "REQUEST_TIMEOUT",
                                f"The request line and headers did not arrive within {self.head_timeout_s} s",
                                {"header_timeout_s": self.head_timeout_s}))

    def _refuse(self, answer: bytes) -> None:
        # A lingering close: write the answer, then end our side and discard what the client still
        # sends; closing with unread bytes would make the kernel reset the connection, and the
        # client would lose the answer. The client's end, or LINGER_S, closes it.
        # Once only: a `Connection: close` answer (the body timeouts' 408) lingers from uvicorn's
        # close, then `on_response_complete` finds the body still unread; a second refusal wrote
        # after the EOF, and every body timeout logged a RuntimeError with its traceback.
        if self._closing:
            return
        self._closing = True
        self._stop_head_timer()
        self._unset_keepalive_if_required()
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(min(self.timeout_keep_alive, LINGER_S), self.transport.close)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def server_config(app: ASGIApp, settings: GatewaySettings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway: address, h11 with the connection limits, and
    asyncio's own loop (uvloop is installed for the OpenAI stand-in; `auto` would pick it here too,
    under the protocol subclass's timers, which are tested on asyncio's). No `server: uvicorn`
    header: it told every caller which server (and so which known flaws) to try; `date` stays."""
    timeout = {"head_timeout_s": settings.header_timeout_s,
               "send_stall_timeout_s": settings.send_stall_timeout_s}
    protocol = type("LimitedH11Protocol", (LimitedH11Protocol,), timeout)
    values: dict[str, Any] = {"host": settings.gateway_host, "port": settings.gateway_port, **options}
    return uvicorn.Config(app, http=protocol, loop="asyncio", server_header=False, date_header=True,
                          h11_max_incomplete_event_size=settings.max_header_bytes,
                          timeout_keep_alive=settings.keep_alive_timeout_s, **values)
