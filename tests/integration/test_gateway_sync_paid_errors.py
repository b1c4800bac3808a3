"""A synchronous lot's 502 or 504 that comes after OpenAI answered some of its calls, through a
real gateway and a model that answers what each test scripts (`canned_model.py`): the answers
billed are reported (`details.usage`) and counted (the gateway's token and cost metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from lotlens_common.model.settings import ModelSettings
from lotlens_common.settings import ServiceSettings
from tests.integration.canned_model import INPUT_TOKENS, Refused, canned_model
from tests.integration.gateway_support import running_gateway
from tests.integration.sync_support import one_lot
from tests.seeds import seed_client_class
from tests.servers import image_host

pytestmark = pytest.mark.integration

ENGLISH = "<p>The front bumper is dented and the left headlight is cracked.</p>"
VISION_OUTPUT_TOKENS = len(ENGLISH) // 4 + 1  # what the canned model reports for it


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url


def vision_usage() -> dict[str, Any]:
    """The usage the one vision answer reports, priced as the default price table has it."""
    price = ModelSettings().prices[ModelSettings().vision_model]
    cost = (INPUT_TOKENS * price.input + VISION_OUTPUT_TOKENS * price.output) / 1_000_000
    return {"input_tokens": INPUT_TOKENS, "cached_input_tokens": 0, "output_tokens": VISION_OUTPUT_TOKENS,
            "reasoning_tokens": 0, "estimated_cost_usd": pytest.approx(cost)}


def counted_tokens(metrics: str) -> dict[tuple[str, str], float]:
    """`lotlens_model_tokens_total` by (model, kind), as the gateway exports it."""
    return {(sample.labels["model"], sample.labels["kind"]): sample.value
            for family in text_string_to_metric_families(metrics) if family.name == "lotlens_model_tokens"
            for sample in family.samples if sample.name == "lotlens_model_tokens_total"}


def test_a_502_in_translation_reports_the_vision_answer_already_paid_for(
        settings: ServiceSettings, engine: Engine, images: str) -> None:
    # The vision answer was billed, then translation got a 500: the 502 said nothing of it, and no
    # metric counted it; the integrator and the operator had no record of the charge. Seed 003's
    # client, unchanged, reads the error body with the usage in it.
    with canned_model(ENGLISH, [Refused(500)]) as model, \
            running_gateway(settings, engine, model_url=model.url) as gw:
        seed_client = seed_client_class()(gw.url, gw.key)
        body, status = seed_client.sync_generate("sync-1", "2019 Toyota Camry", [f"{images}/front.png"],
                                                 languages=["en", "de"])
        metrics = httpx2.get(f"{gw.ops_url}/metrics").text
    assert status == 502, body
    assert set(body) == {"error", "message", "code", "details"}
    assert body["code"] == "OPENAI_UNAVAILABLE" and body["details"]["openai_error"] == "unavailable"
    assert body["details"]["usage"] == vision_usage()
    vision_model = ModelSettings().vision_model
    assert counted_tokens(metrics)[(vision_model, "output")] == VISION_OUTPUT_TOKENS
    assert counted_tokens(metrics)[(vision_model, "input")] == INPUT_TOKENS


def test_a_504_in_translation_reports_the_vision_answer_already_paid_for(
        settings: ServiceSettings, engine: Engine, images: str) -> None:
    with canned_model(ENGLISH, [Refused(500, after_s=3.0)]) as model, \
            running_gateway(settings, engine, model_url=model.url, sync_timeout_s=1.0) as gw:
        response = gw.submit(one_lot(images), languages=["en", "de"])
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["code"] == "OPENAI_TIMEOUT"
    assert body["message"] == "The model did not answer within the 1 s budget"
    assert body["details"] == {"timeout_seconds": 1.0, "usage": vision_usage()}

