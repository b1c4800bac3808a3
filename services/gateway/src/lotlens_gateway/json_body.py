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


def list_prefix(document: Mapping[str, object], listed: str) -> bytes:
    """The bytes of `document` up to the opening of a list under the key `listed`, after its other keys."""
    head = orjson.dumps(document)
    return head[:-1] + (b"," if len(head) > 2 else b"") + orjson.dumps(listed) + b":["


def chunks(prefix: bytes, items: Iterable[object], suffix: bytes,
           chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`prefix`, the items as JSON separated by commas, then `suffix`, in chunks of about `chunk_bytes`:
    the chunk being filled is all this holds."""
    buffer = bytearray(prefix)
    first = True
    for item in items:
        if not first:
            buffer += b","
        buffer += orjson.dumps(item)
        first = False
        if len(buffer) >= chunk_bytes:
            yield bytes(buffer)
            buffer.clear()
    buffer += suffix
    yield bytes(buffer)


def encoded(document: Mapping[str, object], listed: str, items: Iterable[object]) -> bytes:
    """`document` with `items` as a JSON list under the key `listed`, written after its other keys."""
    return b"".join(chunks(list_prefix(document, listed), items, b"]}"))


def encoded_in_chunks(document: Mapping[str, object], listed: str, items: list[Any],
                      chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`encoded`'s bytes in chunks of about `chunk_bytes`, each item dropped from `items` (which is
    emptied) once written: the list's items and the chunk being filled are all that is held.

    A lots page was encoded whole and joined: its lots, their pieces and the joined body together,
    3.5 to 4.5 times its bytes for the length of the request."""
    return chunks(list_prefix(document, listed), _drained(items), b"]}", chunk_bytes)


def _drained(items: list[Any]) -> Iterator[Any]:
    """The items in order, each removed from the list as it is handed out."""
    items.reverse()  # popped from the end, in order
    while items:
        yield items.pop()


def json_answer(body: bytes, status_code: int = 200) -> Response:
    """A JSON answer from bytes already encoded."""
    return Response(body, status_code=status_code, media_type="application/json")
