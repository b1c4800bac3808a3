"""A finished job's usage and cost as polling shows it: `processing_details`, `processing_summary`
and each lot, added fields only (a job without usage reads exactly as before)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, update

from lotlens_client import LotLensClient
from lotlens_common.model.usage import JobUsage, Usage
from lotlens_common.tables import jobs, lots
from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots

pytestmark = pytest.mark.integration

VISION = Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=128,
               estimated_cost_usd=0.00125, model="o4-mini")
TRANSLATION = Usage(input_tokens=400, output_tokens=500, estimated_cost_usd=0.0005, model="gpt-4.1-mini")


def test_a_finished_jobs_usage_shows_in_status_results_and_lots(gateway: Gateway, engine: Engine) -> None:
    lot_list = make_lots(2)
    job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en", "de"])
    job_usage = JobUsage.of([VISION, TRANSLATION, VISION, TRANSLATION]).model_dump(mode="json")
    per_stage = {"vision": VISION.model_dump(mode="json"), "translation": TRANSLATION.model_dump(mode="json")}
    with engine.begin() as conn:
        conn.execute(update(lots).where(lots.c.job_id == job_id).values(usage=per_stage))
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(usage=job_usage))

    status = gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()
    assert status["processing_details"]["usage"] == job_usage
    assert job_usage["estimated_cost_usd"] == pytest.approx(2 * (0.00125 + 0.0005))
    results = gateway.get_job("/api/v1/batch-results/{job_id}", job_id).json()
    assert results["processing_summary"]["usage"] == job_usage
    assert results["processing_summary"]["total_processing_time"] == "45 minutes"  # contract fields as before
    for lot in results["results"]["lots"]:
        assert lot["usage"] == {"input_tokens": 1600, "cached_input_tokens": 200, "output_tokens": 800,
                                "reasoning_tokens": 128, "estimated_cost_usd": pytest.approx(0.00175)}
    with LotLensClient(gateway.url, gateway.key) as sdk:
        parsed = sdk.job_results(job_id)
        assert parsed is not None and parsed.processing_summary.usage == job_usage
        assert parsed.lots[0].usage is not None and parsed.lots[0].usage["output_tokens"] == 800
        assert sdk.job_status(job_id).processing_details.usage == job_usage


def test_a_job_without_usage_has_no_usage_fields(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    status = gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()
    results = gateway.get_job("/api/v1/batch-results/{job_id}", job_id).json()
    assert "usage" not in status["processing_details"] and "usage" not in results["processing_summary"]
    assert all("usage" not in lot for lot in results["results"]["lots"])
