"""The results document, written incrementally: a 50,000-lot job never sits whole in memory.

`GET /batch-results/{id}` and `/download` send the same bytes; the lots come from
`overlay.job_lots`, read about a megabyte at a time (`lot_results_in_chunks`) on a connection
given back before the chunk is sent, and are flushed in chunks. A small document (by its bytes, as
PostgreSQL estimates them) is built whole in one call instead (`small_document`): streaming costs
a thread-pool hop per chunk, more than such a job's rows take to read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from functools import partial

import orjson
from sqlalchemy import Connection, Engine

from lotlens_common.read_models import (
    RENDER_AHEAD_BYTES,
    STREAM_CHUNK,
    JobView,
    document_bytes,
    iter_lot_results,
    lot_results_in_chunks,
)
from lotlens_gateway.json_body import CHUNK_BYTES, chunks
from lotlens_gateway.overlay import job_lots, read_snapshot
from lotlens_gateway.views import is_terminal, results_head, results_summary

# A finished job's document estimated at most this big is read at once and sent as one body.
# Counted in lots (1,000), ten languages of long text were 100 MB a request; counted in
# descriptions, 60 failed lots listing 400 unreachable image URLs each were 58 MB.
WHOLE_DOCUMENT_BYTES = RENDER_AHEAD_BYTES


def document_chunks(job: JobView, lots: Iterable[dict[str, object]],
                    chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`{job_id, status, …, results: {version, …, lots: [...]}}` as byte chunks of the given lots."""
    head = orjson.dumps(results_head(job))
    summary = orjson.dumps(results_summary(job))
    return chunks(head[:-1] + b',"results":' + summary[:-1] + b',"lots":[', lots, b"]}}", chunk_bytes)


def iter_results_document(engine: Engine, job: JobView, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The document, its lots read a chunk at a time (blocking), no connection held between."""
    lots = job_lots(job, lot_results_in_chunks(engine, job), partial(read_snapshot, engine))
    return document_chunks(job, lots, chunk_bytes)


def small_document(conn: Connection, job: JobView) -> bytes | None:
    """The whole document of a finished job estimated at most `WHOLE_DOCUMENT_BYTES`; None otherwise."""
    if not is_terminal(job) or job.total_lots > STREAM_CHUNK:
        return None
    if document_bytes(conn, job) > WHOLE_DOCUMENT_BYTES:
        return None
    lot_results = iter_lot_results(conn, job, stream=False)
    # `conn` runs each statement on its own; at most `STREAM_CHUNK` lots, one reads all the ids.
    return b"".join(document_chunks(job, job_lots(job, lot_results, lambda: nullcontext(conn))))
