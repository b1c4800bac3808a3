"""Direct mode against a model server whose 4xx answer carries the error code `not_sent`, the
code direct mode gave its own line for a request that never left the machine: the server's
refusal is permanent like any 4xx, and its lot fails once instead of going round for ever."""

from __future__ import annotations

import asyncio
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from lotlens_common.model.openai_client import call_responses, make_openai_client
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import postgres_stage
from tests.conftest import new_id
from tests.integration.stage.helpers import STAGE, lot_statuses, open_lots, submit_lots, vision_spec
from tests.servers import serve

pytestmark = pytest.mark.integration

# More rounds than any lot may use: one sent again uncounted would still be open after them.
ROUNDS = 3 * STAGE.max_attempts


class _RefusingWithNotSent(BaseHTTPRequestHandler):
    """An OpenAI-compatible server (a proxy, a vLLM plugin) refusing each request with its own code."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = orjson.dumps({"error": {"message": "this model does not take images", "code": "not_sent",
                                       "type": "invalid_request_error", "param": None}})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        """Say nothing (as every test server here: the access log is noise in pytest's output)."""


async def _rounds(settings: ServiceSettings, engine: Engine, base_url: str, folder: Path,
                  job_id: str) -> None:
    async with make_openai_client("test", f"{base_url}/v1", 10) as client:
        batches = DirectBatches(partial(call_responses, client), 1, folder)
        stage: Stage[Any] = postgres_stage(engine, EventProducer(settings.kafka, "test"), batches,
                                           vision_spec(settings), STAGE.direct_mode())
        for _ in range(ROUNDS):
            await step(stage, watching=True)
            if not open_lots(engine, "vision", job_id):
                return


def test_a_servers_4xx_with_the_code_not_sent_fails_its_lot_instead_of_resending_it_for_ever(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["Camry, front collision"])
    (tmp_path / "work").mkdir()
    with serve(_RefusingWithNotSent) as base_url:
        asyncio.run(_rounds(settings, engine, base_url, tmp_path / "work", job_id))
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.FAILED}
