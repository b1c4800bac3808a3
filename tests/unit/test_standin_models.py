"""The stand-in's parameter lists are the OpenAI description's, and its model table is self-consistent."""

from __future__ import annotations

import json
from typing import Any

from lotlens_openai_standin.batch_record import CREATE_PARAMETERS
from lotlens_openai_standin.models import MODELS, is_reasoning_model, model_facts
from lotlens_openai_standin.parameter_checks import CHAT_PARAMETERS, RESPONSES_PARAMETERS
from tests.openai_spec import SUBSET

SCHEMAS: dict[str, Any] = json.loads(SUBSET.read_text())["components"]["schemas"]


def _properties(name: str) -> set[str]:
    schema = SCHEMAS[name]
    found = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            found |= _properties(part["$ref"].rsplit("/", 1)[-1])
        found |= set(part.get("properties", {}))
    return found


def test_the_parameters_each_endpoint_takes_are_the_descriptions() -> None:
    assert _properties("CreateResponse") == RESPONSES_PARAMETERS
    assert _properties("CreateChatCompletionRequest") == CHAT_PARAMETERS
    assert _properties("CreateBatchRequest") == CREATE_PARAMETERS


def test_model_families_and_snapshots() -> None:
    assert is_reasoning_model("o4-mini") and is_reasoning_model("gpt-5-nano-2025-08-07")
    assert not is_reasoning_model("gpt-4.1-mini") and not is_reasoning_model("omni-unknown")
    assert model_facts("gpt-4o-2024-08-06") == MODELS["gpt-4o"] and model_facts("gpt-9") is None
    assert [name for name, facts in MODELS.items() if not facts.images] == ["o3-mini", "gpt-3.5-turbo"]
