"""JSON bodies written off the event loop, a list item at a time.

One `json.dumps` (or `orjson.dumps`) call holds the GIL until it returns: on a 35 MB page of lots
that was 0.2 s in which the loop answered nothing, health probes included, even from a worker
thread. Encoded one item per call in a worker thread, the loop gets the GIL back between items.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
from fastapi.responses import Response

# What a streamed body renders ahead of the connection (which takes 64 KiB pieces of it).
CHUNK_BYTES = 256 * 1024


def encoded(document: Mapping[str, object], listed: str, items: Iterable[object]) -> bytes:
    """`document` with `items` as a JSON list under the key `listed`, written after its other keys."""
    head = orjson.dumps(document)
    pieces = [head[:-1], b"," if len(head) > 2 else b"", orjson.dumps(listed), b":["]
    for number, item in enumerate(items):
        if number:
            pieces.append(b",")
        pieces.append(orjson.dumps(item))
    pieces.append(b"]}")
    return b"".join(pieces)


def encoded_in_chunks(document: Mapping[str, object], listed: str, items: list[Any],
                      chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`encoded`'s bytes in chunks of about `chunk_bytes`, each item dropped from `items` (which is
    emptied) once written: the list's items and the chunk being filled are all that is held.

    A lots page was encoded whole and joined: its lots, their pieces and the joined body together,
    3.5 to 4.5 times its bytes for the length of the request."""
    head = orjson.dumps(document)
    buffer = bytearray(head[:-1] + (b"," if len(head) > 2 else b"") + orjson.dumps(listed) + b":[")
    items.reverse()  # popped from the end, in order
    first = True
    while items:
        if not first:
            buffer += b","
        buffer += orjson.dumps(items.pop())
        first = False
        if len(buffer) >= chunk_bytes:
            yield bytes(buffer)
            buffer.clear()
    buffer += b"]}"
    yield bytes(buffer)


def json_answer(body: bytes, status_code: int = 200) -> Response:
    """A JSON answer from bytes already encoded."""
    return Response(body, status_code=status_code, media_type="application/json")
