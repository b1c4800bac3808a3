"""Raw-socket HTTP for the gateway's integration tests: requests no HTTP client would send
(trickled bodies, heads never finished, raw query strings) and the answers read byte for byte."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from tests.integration.gateway_support import Gateway

# How long a test waits for an answer the limits promise within about a second or three.
WAIT_S = 20.0


def connect(gateway: Gateway) -> socket.socket:
    """A raw TCP connection to the gateway."""
    address = urlsplit(gateway.url)
    sock = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=WAIT_S)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a socket timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def trickle(sock: socket.socket, piece: bytes, every_s: float) -> bytes:
    """Send `piece` whenever nothing arrived for `every_s`, until the server closes; what it sent.

    A reset instead of a close fails the test.
    """
    deadline = time.monotonic() + WAIT_S
    sock.settimeout(every_s)
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            sock.sendall(piece)
            continue
        if not chunk:
            break
        received += chunk
    return received


def answer_of(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of one HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    return int(status_line.split()[1]), headers, json.loads(body) if body else {}


def read_one_answer(sock: socket.socket) -> int:
    """Read one answer framed by Content-Length; its status."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    status, headers, _ = answer_of(received.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
    body = received.partition(b"\r\n\r\n")[2]
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status
