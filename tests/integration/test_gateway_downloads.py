"""Result downloads against clients that read slowly or not at all: what the gateway holds for each,
how many it serves at once, and when it gives up on one that stopped reading.

Memory is measured with tracemalloc: the gateway serves from a thread of this test process, so
what its Python code allocates for the paused downloads (rendered lots, bodies, the transport's
buffers) is traced; the sockets' kernel buffers are not, and the clients allocate nothing.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.download_support import (
    DOWNLOAD,
    drain,
    insert_long_texts_job,
    insert_unreachable_images_job,
    stalled_downloads,
    start_download,
)
from tests.integration.gateway_support import Gateway, running_gateway

pytestmark = pytest.mark.integration

RESULTS = "/api/v1/batch-results/{job_id}"
LOTS = "/api/v1/batch-jobs/{job_id}/lots?limit=500"
MB = 1024 * 1024
# What one paused download may hold; the unfixed gateway held 15 to 20 MB (a whole 1,000-lot chunk
# rendered, or a whole document in the transport's buffer).
HELD_PER_DOWNLOAD = 6 * MB


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway that gives a stalled reader long enough for the measurements."""
    with running_gateway(settings, engine, send_stall_timeout_s=300) as running:
        yield running


def settled_traced_bytes(timeout_s: float = 60.0) -> int:
    """Traced memory once it stops growing (the downloads have filled every buffer and wait)."""
    samples: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(tracemalloc.get_traced_memory()[0])
        recent = samples[-5:]
        if len(samples) >= 6 and max(recent) - min(recent) < MB // 2:
            break
    return samples[-1]


def held_per_stalled_download(gateway: Gateway, job_id: str, count: int) -> float:
    """Bytes the gateway holds per paused download of the job, `count` of them at once."""
    tracemalloc.start()
    try:
        before = settled_traced_bytes()
        with stalled_downloads(gateway.url, gateway.key, job_id, count):
            held = settled_traced_bytes() - before
    finally:
        tracemalloc.stop()
    return held / count


@pytest.mark.parametrize("make_job", [
    pytest.param(lambda engine, client: insert_long_texts_job(engine, client, 1500), id="long-texts"),
    pytest.param(lambda engine, client: insert_unreachable_images_job(engine, client, 20),
                 id="unreachable-images"),
])
def test_a_download_that_is_not_read_holds_about_a_megabyte_not_its_document(
        gateway: Gateway, engine: Engine, make_job: Callable[[Engine, str], str]) -> None:
    """A 1,000-lot chunk was rendered whole and kept while the reader did not read (10 languages of
    1.5 KB: 15 MB a download), and a job of few lots was built whole whatever its bytes (20 failed
    lots with 400 unreachable image URLs each: a 19 MB body a request): 20 such readers took a pod
    past its memory limit."""
    job_id = make_job(engine, gateway.client_id)
    document = gateway.get_job(RESULTS, job_id)
    assert document.status_code == 200 and len(document.content) > 15 * MB

    held = held_per_stalled_download(gateway, job_id, 3)

    assert held < HELD_PER_DOWNLOAD, f"{held / MB:.1f} MB held per paused download"
    assert "content-length" not in document.headers  # streamed, whatever its lot count


def test_a_clients_downloads_past_its_limit_are_429_and_past_the_process_limit_503(
        settings: ServiceSettings, engine: Engine) -> None:
    """Nothing bounded the downloads in flight: one client could open as many as it liked."""
    with running_gateway(settings, engine, download_slots=3, download_slots_per_client=2,
                         send_stall_timeout_s=300) as gateway:
        mine = insert_long_texts_job(engine, gateway.client_id, 600)
        theirs = insert_long_texts_job(engine, gateway.other_id, 600)
        with stalled_downloads(gateway.url, gateway.key, mine, 2):
            for path in (DOWNLOAD, RESULTS, LOTS):
                refused = gateway.get_job(path, mine)
                assert refused.status_code == 429, (path, refused.text[:300])
                assert refused.json()["code"] == "RATE_LIMIT_EXCEEDED"
                assert {"error", "message", "details"} <= set(refused.json())
                assert refused.json()["details"]["concurrent_downloads"] == 2
                assert int(refused.headers["retry-after"]) >= 1
            with stalled_downloads(gateway.url, gateway.other_key, theirs, 1):
                busy = gateway.get_job(RESULTS, theirs, key=gateway.other_key)
                assert busy.status_code == 503, busy.text[:300]
                assert busy.json()["code"] == "DOWNLOADS_BUSY"
                assert int(busy.headers["retry-after"]) >= 1
        # The places are given back when the downloads end.
        assert gateway.get_job(RESULTS, mine).status_code == 200
        assert gateway.get_job(RESULTS, theirs, key=gateway.other_key).status_code == 200


def test_a_download_whose_reader_stops_is_closed_after_the_stall_timeout_and_its_place_freed(
        settings: ServiceSettings, engine: Engine) -> None:
    """A reader that stopped reading kept its download, and the memory under it, for good."""
    with running_gateway(settings, engine, send_stall_timeout_s=1, download_slots_per_client=1) as gateway:
        job_id = insert_long_texts_job(engine, gateway.client_id, 1500)
        whole = len(gateway.get_job(DOWNLOAD, job_id).content)
        sock = start_download(gateway.url, gateway.key, job_id)
        try:
            time.sleep(4)  # reads nothing for four stall timeouts
            received, ended = drain(sock)
        finally:
            sock.close()
        assert ended in ("reset", "eof") and received < whole, f"{ended} after {received} of {whole} bytes"
        # The slot is free again (one per client here).
        assert gateway.get_job(DOWNLOAD, job_id).status_code == 200


def test_a_slow_reader_that_keeps_reading_gets_the_whole_document(
        settings: ServiceSettings, engine: Engine) -> None:
    """Progress, not speed: a reader taking a few KB every 20 ms for longer than the stall timeout
    is served to the end."""
    with running_gateway(settings, engine, send_stall_timeout_s=1) as gateway:
        job_id = insert_long_texts_job(engine, gateway.client_id, 60)
        whole = gateway.get_job(RESULTS, job_id).content
        sock = start_download(gateway.url, gateway.key, job_id, RESULTS, close=True)
        received = bytearray()
        started = time.monotonic()
        try:
            while chunk := sock.recv(64 * 1024):
                received += chunk
                time.sleep(0.02)
        finally:
            sock.close()
        assert time.monotonic() - started > 1  # slower than the stall timeout in all
        assert received.endswith(whole)


def test_a_download_read_at_once_has_the_same_bytes_as_the_results(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_unreachable_images_job(engine, gateway.client_id, 3, urls_per_lot=40)
    with httpx2.stream("GET", f"{gateway.url}{DOWNLOAD.format(job_id=job_id)}",
                       headers={"X-Signature": gateway.sign(job_id)}) as download:
        body = b"".join(download.iter_raw())
    assert body == gateway.get_job(RESULTS, job_id).content
    assert body.startswith(b'{"job_id":"' + job_id.encode() + b'","status":"completed"')


def test_downloads_refused_for_concurrency_leave_the_clients_polling_budget_untouched(
        settings: ServiceSettings, engine: Engine) -> None:
    """A download refused 429 `concurrent_downloads` was first counted against the client's polling
    rate limit: a client retrying its downloads used up the budget its status polls needed."""
    with running_gateway(settings, engine, download_slots_per_client=1, rate_limit_polling=6,
                         send_stall_timeout_s=300) as gateway:
        job_id = insert_long_texts_job(engine, gateway.client_id, 600)
        with stalled_downloads(gateway.url, gateway.key, job_id, 1):  # one polling request
            for path in (DOWNLOAD, RESULTS, LOTS) * 3:
                refused = gateway.get_job(path, job_id)
                assert refused.status_code == 429, refused.text[:300]
                assert refused.json()["details"].get("reason") == "concurrent_downloads", refused.text[:300]
            polls = [gateway.get_job("/api/v1/batch-status/{job_id}", job_id).status_code for _ in range(6)]
    assert polls == [200] * 5 + [429], polls
