"""`python -m bench.servers PORT`: a lean HTTP/1.1 keep-alive server for images and webhooks.

* HEAD/GET of a path ending `.png` (without `missing` in it): a small PNG, 200.
* POST anything: 200 with an empty body; the arrival (wall-clock time, path, body) is recorded.
* GET `/_records`: the recorded arrivals as JSON `[[time, path, body], ...]`; GET `/_reset` clears them.

One asyncio process, no framework, so it is never the bottleneck it measures (loopback only).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from bench.chart import tiny_image

IMAGE = tiny_image()
_records: list[tuple[float, str, str]] = []


def _response(
    status: str, body: bytes, content_type: str, head: bool = False, length: int | None = None
) -> bytes:
    size = len(body) if length is None else length
    headers = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    return headers if head else headers + body


def _answer(method: str, path: str, body: bytes) -> bytes:
    if method == "POST":
        _records.append((time.time(), path, body.decode("utf-8", "replace")))
        return _response("200 OK", b"", "text/plain")
    if path == "/_records":
        return _response("200 OK", orjson.dumps(_records), "application/json")
    if path == "/_reset":
        _records.clear()
        return _response("200 OK", b"", "text/plain")
    if method in ("GET", "HEAD") and path.endswith(".png") and "missing" not in path:
        return _response("200 OK", IMAGE, "image/png", head=method == "HEAD")
    return _response("404 Not Found", b"", "text/plain", head=method == "HEAD")


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            writer.write(_answer(method, path, body))
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=1024, limit=1 << 20)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
