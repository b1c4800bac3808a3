"""Answers that can be big (results documents, lots pages): how many are sent at once, and how
their bytes reach the connection.

A client that does not read its answer pauses it, and whatever the answer holds stays in memory
until it reads or leaves. Nothing bounded how many such answers were in flight: twenty unread
downloads of a 3,000-lot job added 470 MB to the gateway, six of a 58 MB document took it to
829 MB, past a pod's limit, and the kill ended every other client's requests. Now:

* each holds one of `per_process` places in the process and one of its client's `per_client`
  while it is read from the database and sent (past the client's: 429 `RATE_LIMIT_EXCEEDED`, its
  own doing; past the process's: 503 `DOWNLOADS_BUSY`, the gateway's load; both with Retry-After);
* its bytes are handed to the connection 64 KiB at a time (`json_download`), each piece once the
  client took the last: a paused answer holds a piece, not its body, in the transport's buffer, and
  its place until all of it is handed over (a body written whole freed its place at once, however
  little the client had read);
* a client that takes no byte for `send_stall_timeout_s` is disconnected (connections.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.places import Places, Refusals

PIECE_BYTES = 64 * 1024
# A download ends in seconds once its client reads; one stalled ends at the stall timeout.
REFUSALS = Refusals(
    reason="concurrent_downloads",
    too_many=("At most {limit} results downloads and lots pages are sent to a client at once; "
              "retry in {retry} s, or when one of them has finished"),
    busy_code="DOWNLOADS_BUSY", busy="The gateway is sending {count} other downloads; retry in {retry} s",
    in_progress="downloads_in_progress")


def download_slots(per_process: int, per_client: int, metrics: GatewayMetrics) -> Places:
    """Big answers in flight at once, per client and in all, in one process (its event loop)."""
    return Places(per_process, per_client, metrics.downloads, metrics.downloads_refused, REFUSALS)


def json_download(body: bytes | Iterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    """A JSON answer handed to the connection a piece at a time: a whole body (with its
    Content-Length, as one body is sent), or the chunks of a sync iterator, each pulled in a
    worker thread, off the event loop."""
    if isinstance(body, bytes):
        framing = {"Content-Length": str(len(body))}
        return StreamingResponse(_pieces(_whole(body)), media_type="application/json",
                                 headers={**(headers or {}), **framing})
    return StreamingResponse(_pieces(iterate_in_threadpool(body)), media_type="application/json",
                             headers=headers)


async def _whole(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _pieces(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        for start in range(0, len(chunk), PIECE_BYTES):
            yield chunk[start:start + PIECE_BYTES]
