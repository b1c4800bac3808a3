"""A fault that loses the gateway's answer must not make the chaos invariants report the job it
created, or the cancel it carried out: the run asks the gateway once the faults are over. The
gateway is a transport answering as a faulty one would; the job it made is in PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, insert

from chaos.invariants import check_jobs, check_refused
from chaos.lost_answers import resolve
from chaos.schedule import JobPlan
from chaos.workload import Submitted, submit
from lotlens_client import LotLensClient
from lotlens_common.tables import jobs, lots
from tests.conftest import new_id

pytestmark = pytest.mark.integration


class _Gateway:
    """Makes each job the first time its Idempotency-Key is sent, then answers with it; the first
    answer of each kind in `lose` (POST, cancel) is lost: a 503 after the work, as a proxy's."""

    def __init__(self, engine: Engine, job_status: str, lose: set[str]) -> None:
        self.engine, self.job_status, self.lose = engine, job_status, lose
        self.jobs: dict[str, str] = {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        kind = "cancel" if request.url.path.endswith("/cancel") else request.method
        if kind == "POST":
            key = request.headers["idempotency-key"]
            if key not in self.jobs:
                self.jobs[key] = self._create(json.loads(request.content)["lots"])
            body: dict[str, Any] = {"job_id": self.jobs[key], "status": "accepted", "total_lots": 2}
        elif kind == "cancel":
            body = {"job_id": "", "status": "cancelled", "message": "cancelled"}
        else:
            body = {"job_id": request.url.path.rsplit("/", 1)[-1], "status": self.job_status, "progress": {}}
        if kind in self.lose:
            self.lose.discard(kind)
            return httpx2.Response(503, json={"error": "Unavailable", "message": "down",
                                              "code": "SERVICE_UNAVAILABLE"})
        return httpx2.Response(201 if kind == "POST" else 200, json=body)

    def _create(self, lot_bodies: list[dict[str, Any]]) -> str:
        job_id = new_id("job-")
        with self.engine.begin() as conn:
            conn.execute(insert(jobs).values(job_id=job_id, status=self.job_status,
                                             total_lots=len(lot_bodies)))
            conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot["lot_id"], "status": "cancelled"}
                                        for lot in lot_bodies])
        return job_id


def _run(engine: Engine, lose: str) -> tuple[Submitted, _Gateway]:
    """One workload submission (cancelled when its cancel's answer is the one lost), then the
    answers asked for again, as the run does after the faults."""
    cancel = lose == "cancel"
    gateway = _Gateway(engine, "cancelled" if cancel else "pending", {lose})
    client = LotLensClient("http://gateway.test", "key", transport=httpx2.MockTransport(gateway),
                           max_retries=0)
    out = Submitted()
    submit(client, JobPlan(lots=2, languages=("en",), webhook="ok", cancel=cancel), "http://images.test",
           "http://hooks.test", out)
    resolve(client, out)
    return out, gateway


def test_a_job_made_behind_a_lost_answer_is_accepted_not_refused(engine: Engine) -> None:
    out, gateway = _run(engine, "POST")
    assert check_refused(engine, out) == []
    assert list(out.accepted) == list(gateway.jobs.values())
    assert out.refused == [] and out.lost_submissions == []


def test_a_cancel_carried_out_behind_a_lost_answer_counts_as_cancelled(engine: Engine) -> None:
    out, _gateway = _run(engine, "cancel")
    [job_id] = out.accepted
    assert out.cancelled == {job_id}
    assert check_jobs(engine, out, {job_id: "cancelled"}) == []


def test_a_submission_refused_with_a_4xx_stays_refused_and_its_lots_running_are_reported(
        engine: Engine) -> None:
    job_id, lot_id = new_id("job-"), new_id("lot-")
    out = Submitted(refused=[[lot_id]])
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=job_id, status="pending", total_lots=1))
        conn.execute(insert(lots).values(job_id=job_id, lot_id=lot_id, status="pending"))
    assert check_refused(engine, out) == ["1 lots of requests answered without 2xx were processed"]
