"""A model server on loopback that goes down mid-round, as a vLLM restarting looks to direct mode.

It answers `POST /v1/responses` with the stand-in's answers (forwarded), one connection at a time,
each closed after its answer (so every request opens a connection of its own). Down, it listens
no more: every request is refused before it leaves the machine (`ECONNREFUSED`), as while a
server restarts. It goes down after answering `answers_before_down` requests (the answer still
given), or on a request whose body holds `crash_marker`, which it drops unanswered (the request
that brings the server down). `up()` is the restart finished.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import orjson

from tests.servers import free_port

_ACCEPT_POLL_S = 0.05  # a blocked accept() is not woken by close(): the loop looks at `stopped`


class RestartingModel:
    """The server's controls, and what it saw: the lots it answered and those it fell over on."""

    def __init__(self, upstream: str) -> None:
        self._upstream = httpx2.Client(base_url=upstream, timeout=30)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self.answers_before_down: int | None = None
        self.crash_marker: str | None = None
        self.answered: Counter[str] = Counter()  # by the request's last text (the lot's notes)
        self.dropped: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._serve, name="restarting-model", daemon=True)

    @property
    def base_url(self) -> str:
        """The `/v1` base URL the SDK is given."""
        return f"http://127.0.0.1:{self.port}/v1"

    def up(self) -> None:
        """Listen again, on the same port (a no-op while up)."""
        if self._listener is None:
            listener = socket.create_server(("127.0.0.1", self.port))
            listener.settimeout(_ACCEPT_POLL_S)
            self._listener = listener

    def _down(self) -> None:
        # Closed by the serving thread alone, never while it waits in accept(): refused at once.
        assert self._listener is not None
        self._listener.close()
        self._listener = None

    def _serve(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                self._stopped.wait(_ACCEPT_POLL_S)
                continue
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        path, headers, body = _read_request(connection)
        if not body:
            return  # a connection closed before its request: nothing to answer
        notes = _notes(body)
        if self.crash_marker is not None and self.crash_marker in notes:
            self.dropped[notes] += 1
            self._down()
            return  # closed unanswered: the client's request was taken, then the server died
        answer = self._upstream.post(path.removeprefix("/v1"), content=body, headers={
            "content-type": "application/json", "authorization": headers.get("authorization", "")})
        self.answered[notes] += 1
        if self.answers_before_down is not None and sum(self.answered.values()) >= self.answers_before_down:
            self._down()  # before the answer goes: the client's next connection is refused
        connection.sendall(b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                           b"connection: close\r\n\r\n%s" % (answer.status_code, len(answer.content),
                                                            answer.content))

    def restart_mid_round(self) -> None:
        """Up now, and down again after answering one request more."""
        self.up()
        self.answers_before_down = sum(self.answered.values()) + 1


def _read_request(connection: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    path = request_line.split(" ")[1] if " " in request_line else ""
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return path, headers, body


def _notes(body: bytes) -> str:
    """A vision request's last text: the lot's notes, which name the lot in these tests."""
    return str(orjson.loads(body)["input"][-1]["content"][-1]["text"])


@contextmanager
def restarting_model(upstream: str) -> Iterator[RestartingModel]:
    """The server in front of `upstream` (the stand-in's `/v1`), up, until the block ends."""
    server = RestartingModel(upstream)
    server.up()
    server._thread.start()
    try:
        yield server
    finally:
        server._stopped.set()
        server._thread.join(timeout=10)
        if server._listener is not None:
            server._listener.close()
        server._upstream.close()
