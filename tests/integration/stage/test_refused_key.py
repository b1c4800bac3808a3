"""The vision stage while OpenAI refuses its key (a revoked or wrong OPENAI_API_KEY): it pauses
with one log line, says once when the key works again, and counts every refused call."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.metrics import OPERATIONS
from tests.conftest import new_id
from tests.integration.stage.helpers import completed_lots, drive, job_events, submit_lots, vision_spec
from tests.standin import Standin

REFUSED_CALLS = 6


def authentication_errors() -> float:
    """lotlens_openai_errors_total of the vision stage, kind authentication, over every operation."""
    return sum(REGISTRY.get_sample_value("lotlens_openai_errors_total", {
        "stage": "vision", "operation": operation, "kind": "authentication"}) or 0.0
        for operation in OPERATIONS)


def test_a_refused_key_pauses_the_stage_with_one_line_and_counts_every_refused_call(
        settings: ServiceSettings, engine: Engine, standin: Standin,
        caplog: pytest.LogCaptureFixture) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a car", "another car"])
    # Every call answers 401 invalid_api_key until REFUSED_CALLS of them were refused: the key
    # was revoked, then a working one was put back.
    standin.faults(api_faults=[{"scope": "any", "kind": "invalid_api_key", "count": REFUSED_CALLS}])
    before = authentication_errors()
    with caplog.at_level(logging.INFO, logger="lotlens_common.stage"):
        asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id, seconds=60))

    assert standin.control.get("/_standin/faults").json()["api_faults"] == []  # all were refused
    assert completed_lots(job_events(settings, settings.topics.vision, job_id, 2)) == ["lot-0", "lot-1"]
    assert authentication_errors() - before == REFUSED_CALLS
    stage_records = [r for r in caplog.records if r.name.startswith("lotlens_common.stage")]
    tracebacks = [r.getMessage() for r in stage_records if r.exc_info]
    assert tracebacks == [], f"{len(tracebacks)} tracebacks logged: {tracebacks[:3]}"
    key_lines = [r.getMessage() for r in stage_records if "key" in r.getMessage()]
    assert len(key_lines) == 2, key_lines
    assert "refused the key" in key_lines[0] and "accepts the key again" in key_lines[1]
