"""JSON bodies written off the event loop, a list item at a time.

One `json.dumps` (or `orjson.dumps`) call holds the GIL until it returns: on a 35 MB page of lots
that was 0.2 s in which the loop answered nothing, health probes included, even from a worker
thread. Encoded one item per call in a worker thread, the loop gets the GIL back between items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
from fastapi.responses import Response


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


def json_answer(body: bytes, status_code: int = 200) -> Response:
    """A JSON answer from bytes already encoded."""
    return Response(body, status_code=status_code, media_type="application/json")
