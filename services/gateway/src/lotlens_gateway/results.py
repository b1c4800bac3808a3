"""The results document, written incrementally: a 50,000-lot job never sits whole in memory.

`GET /batch-results/{id}` and `/download` send the same bytes; the lots come from
`read_models.iter_lot_results` (a server-side cursor) and are flushed in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from sqlalchemy import Engine

from lotlens_common.read_models import JobView, iter_lot_results
from lotlens_gateway.views import results_head, results_summary

CHUNK_BYTES = 256 * 1024


def iter_results_document(engine: Engine, job: JobView, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`{job_id, status, …, results: {version, …, lots: [...]}}` as byte chunks (blocking)."""
    head = orjson.dumps(results_head(job))
    summary = orjson.dumps(results_summary(job))
    buffer = bytearray(head[:-1] + b',"results":' + summary[:-1] + b',"lots":[')
    with engine.connect() as conn:
        first = True
        for lot in iter_lot_results(conn, job):
            if not first:
                buffer += b","
            buffer += orjson.dumps(lot)
            first = False
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
    buffer += b"]}}"
    yield bytes(buffer)
