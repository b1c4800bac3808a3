"""`GET /api/v1/batch-jobs/{job_id}/lots`: a job's lots page by page, filtered by status, while
the job runs too (batch-results answers 202 then)."""

from __future__ import annotations

import threading
import time

import httpx2
import pytest
from sqlalchemy import Engine, insert, update

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import descriptions, lots
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    insert_running_job,
    make_lots,
    running_gateway,
)

pytestmark = pytest.mark.integration
PATH = "/api/v1/batch-jobs/{job_id}/lots"


def page(gateway: Gateway, job_id: str, query: str = "", key: str | None = None) -> httpx2.Response:
    signature = {"X-Signature": gateway.sign(job_id, key)}
    return httpx2.get(f"{gateway.url}{PATH.format(job_id=job_id)}?{query}", headers=signature, timeout=30)


def test_lots_come_a_page_at_a_time_in_request_order_and_by_status(gateway: Gateway, engine: Engine) -> None:
    lot_list = make_lots(5)
    ids = [lot["lot_id"] for lot in lot_list]
    job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en", "de"], failed=[ids[1], ids[4]])

    first = page(gateway, job_id, "limit=2").json()
    assert [lot["lot_id"] for lot in first["lots"]] == ids[:2] and first["status"] == "completed"
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 5, "has_more": True,
                                   "next_offset": 2}
    assert [d["language"] for d in first["lots"][0]["descriptions"]] == ["en", "de"]
    last = page(gateway, job_id, "limit=2&offset=4").json()
    assert [lot["lot_id"] for lot in last["lots"]] == ids[4:] and not last["pagination"]["has_more"]

    failed = page(gateway, job_id, "status=failed").json()
    assert [lot["lot_id"] for lot in failed["lots"]] == [ids[1], ids[4]]
    assert all(lot["error_message"] and lot["descriptions"] == [] for lot in failed["lots"])
    assert failed["pagination"]["total"] == 2


def test_a_running_jobs_lots_are_listed_and_strangers_and_bad_queries_refused(
        gateway: Gateway, engine: Engine) -> None:
    job_id = insert_running_job(engine, gateway.client_id, total_lots=2)
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": f"r{i}", "seq": i, "status": status}
                                    for i, status in enumerate(["translating", "pending"])])
    running = page(gateway, job_id).json()
    listed = [(lot["lot_id"], lot["status"]) for lot in running["lots"]]
    assert listed == [("r0", "translating"), ("r1", "pending")]
    assert page(gateway, job_id, key=gateway.other_key).status_code == 404
    assert httpx2.get(f"{gateway.url}{PATH.format(job_id=job_id)}").status_code == 401
    assert page(gateway, job_id, "limit=501").status_code == 422
    assert page(gateway, job_id, "status=lost").status_code == 422


def test_a_big_page_is_written_without_stalling_the_other_requests(settings: ServiceSettings,
                                                                   engine: Engine) -> None:
    # 500 lots in 10 languages of long text is a 35 MB answer: written on the event loop by
    # JSONResponse, it held every other request for most of a second. The probe: an unsigned
    # status poll, refused (401) on the loop without a thread or the database. (Pages are bounded
    # to 4 MiB by default, test_gateway_lots_bytes.py; a gateway allowed 64 MiB shows the writing.)
    with running_gateway(settings, engine, lots_page_max_bytes=64 * 1024 * 1024) as gateway:
        big_page_written_while_probed(gateway, engine)


def big_page_written_while_probed(gateway: Gateway, engine: Engine) -> None:
    """A 35 MB page requested while a probe polls the loop; no probe waits half the page's time."""
    languages = ["en", "de", "fr", "es", "it", "pt", "pl", "nl", "sv", "ru"]
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(500), languages)
    with engine.begin() as conn:
        conn.execute(update(descriptions).where(descriptions.c.job_id == job_id)
                     .values(damages="<p>" + "Dent on the rear door, scratched bumper. " * 160 + "</p>"))
    waits: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx2.Client(base_url=gateway.url, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get("/api/v1/batch-status/probe")
                waits.append(time.perf_counter() - started)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        answer = page(gateway, job_id, "limit=500")
        took = time.perf_counter() - started
    finally:
        done.set()
        prober.join()
    assert answer.status_code == 200 and len(answer.json()["lots"]) == 500
    assert len(answer.content) > 30_000_000
    # Written on the loop, the page held a probe for most of its time; written in pieces, a probe
    # waits at most a scheduling hiccup (a quarter flaked once the page took only 0.4 s).
    assert max(waits) < took / 2, f"a probe waited {max(waits):.3f} s of the page's {took:.3f} s"
