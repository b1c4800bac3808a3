"""The gateway's OpenAPI document held to the official OpenAPI 3.1 schema (openapi-spec-validator),
not only to what our own tools happen to read: integrators generate clients from it."""

from __future__ import annotations

import copy
from typing import Any

from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.integration.gateway_support import openapi_document


def problems(doc: dict[str, Any]) -> list[str]:
    return [error.message for error in OpenAPIV31SpecValidator(doc).iter_errors()]


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    assert problems(doc) == []


def test_the_check_refuses_a_broken_openapi_document() -> None:
    broken = copy.deepcopy(openapi_document())
    operation = broken["paths"]["/api/v1/generate-descriptions"]["post"]
    operation["responses"]["201"].pop("description")
    operation["parameters"] = [{"name": "X-Signature", "in": "header-ish"}]
    assert len(problems(broken)) >= 2
