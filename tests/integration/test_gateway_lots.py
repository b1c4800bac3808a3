"""`GET /api/v1/batch-jobs/{job_id}/lots`: a job's lots page by page, filtered by status, while
the job runs too (batch-results answers 202 then)."""

from __future__ import annotations

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
from tests.integration.loop_steps import loop_steps_watched

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
    # JSONResponse, it held every other request for most of a second. (Pages are bounded to 4 MiB
    # by default, test_gateway_lots_bytes.py; a gateway allowed 64 MiB shows the writing.)
    with running_gateway(settings, engine, lots_page_max_bytes=64 * 1024 * 1024) as gateway:
        big_page_written_while_watched(gateway, engine)


def big_page_written_while_watched(gateway: Gateway, engine: Engine) -> None:
    """A 35 MB page requested while a sampler watches the loop; no step of the loop takes a tenth
    of the CPU time the page costs."""
    languages = ["en", "de", "fr", "es", "it", "pt", "pl", "nl", "sv", "ru"]
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(500), languages)
    with engine.begin() as conn:
        conn.execute(update(descriptions).where(descriptions.c.job_id == job_id)
                     .values(damages="<p>" + "Dent on the rear door, scratched bumper. " * 160 + "</p>"))
    # A fresh app's first request builds its routes' state (20 ms on the loop), not the page's doing.
    assert page(gateway, job_id, "limit=1").status_code == 200
    with loop_steps_watched(gateway.loop) as steps:
        spent = time.process_time()
        answer = page(gateway, job_id, "limit=500")
        spent = time.process_time() - spent
    assert answer.status_code == 200 and len(answer.json()["lots"]) == 500
    assert len(answer.content) > 30_000_000
    # Written on the loop by JSONResponse, one step held it for 0.18-0.35 s of the 0.38-0.61 s of
    # CPU the page cost; written in pieces, the longest step is 1.3-2.1 ms. CPU times: the machine's
    # load stretches neither (a probe request's wall-clock wait flaked under `make test`).
    assert steps.longest_s < spent / 10, (
        f"a step of the loop took {steps.longest_s:.3f} s of CPU of the page's {spent:.3f} s")
