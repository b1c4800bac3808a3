"""Small local HTTP servers the tests talk to: an image host and a webhook receiver."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lotlens_common.ops import SHUTDOWN_POLL_S

# Below the kernel's ephemeral range (32768-60999 here): a port the kernel hands out with `bind(0)`
# is also what it picks for outgoing connections, so a client reconnecting in a loop (librdkafka
# to a stopped broker, every 50 ms) could take it before the server that was given it binds.
_ALL_PORTS = range(22000, 32700)


def _worker_ports(worker: str | None) -> range:
    """This pytest-xdist worker's own slice of the ports (all of them without xdist): a port handed
    out stays unbound for seconds (a stack's services, a broker starting), and the other worker's
    bind check then found it free."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    index = int(worker.removeprefix("gw")) if worker else 0
    size = len(_ALL_PORTS) // max(count, 1)
    return _ALL_PORTS[index * size:(index + 1) * size]


_PORTS = _worker_ports(os.environ.get("PYTEST_XDIST_WORKER"))
_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now, and no outgoing connection will take."""
    with _ports_lock:
        for _ in range(200):
            port = random.choice(_PORTS)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def png(width: int = 32, height: int = 24, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A valid PNG image of one colour."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run a handler on a free loopback port in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # Its `shutdown()` waits for the loop's next look (0.5 s apart by default) in every teardown.
    thread = threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def image_host() -> Iterator[str]:
    """Serves a PNG for any path ending in `.png`, except paths containing `missing` (404); a
    `-<n>mb.png` path is an image of n decimal megabytes; one containing `-head0` answers HEAD
    with `Content-Length: 0`, as servers that do not know the size before sending it do."""
    image = png()

    class Images(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            if self.path.endswith(".png") and "missing" not in self.path:
                megabytes = re.search(r"-(\d+)mb\.png$", self.path)
                data = image if megabytes is None else image.ljust(int(megabytes[1]) * 1_000_000, b"\0")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                unknown = not body and "-head0" in self.path
                self.send_header("Content-Length", "0" if unknown else str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)
            else:
                self.send_error(404)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def log_message(self, *_args: object) -> None:
            """Say nothing: an access line per request buried the test's own output."""

    with serve(Images) as url:
        yield url


@dataclass
class ReceivedWebhook:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """Records every webhook; `respond` decides the status code of each."""

    url: str = ""
    received: list[ReceivedWebhook] = field(default_factory=list)
    respond: Callable[[ReceivedWebhook], int] = lambda _hook: 200


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A receiver on a free loopback port."""
    receiver = WebhookReceiver()

    class Hooks(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook = ReceivedWebhook(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            receiver.received.append(hook)
            self.send_response(receiver.respond(hook))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            """Say nothing: an access line per request buried the test's own output."""

    with serve(Hooks) as url:
        receiver.url = url
        yield receiver


@dataclass
class SilentServer:
    """A TCP server that accepts every connection and never sends a byte."""

    port: int = 0
    accepted: list[float] = field(default_factory=list)  # when each connection was accepted (monotonic)


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    """An endpoint on a free loopback port that takes connections and never answers: each request
    to it runs into its client's timeout. The connections are held until exit."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    state = SilentServer(port=listener.getsockname()[1])
    listener.settimeout(0.1)  # a blocked accept() is not woken by close(): the loop looks at `done`
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)
            state.accepted.append(time.monotonic())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()
        for connection in held:
            connection.close()
