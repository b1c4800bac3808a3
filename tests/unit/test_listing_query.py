"""`GET /api/v1/batch-jobs` takes only its own parameters, before the signature is checked."""

from __future__ import annotations

import pytest

from lotlens_gateway.deps import LISTING_PARAMETERS, refuse_foreign_query
from lotlens_gateway.errors import ApiError
from tests.integration.gateway_support import openapi_document


def test_the_known_names_are_the_listing_routes_query_parameters() -> None:
    operation = openapi_document()["paths"]["/api/v1/batch-jobs"]["get"]
    assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == set(LISTING_PARAMETERS)


@pytest.mark.parametrize("query", [b"", b"limit=10", b"status=&created_after=&created_before=&limit=10",
                                   b"status=failed&limit=20&offset=0&created_after=2025-08-05T07%3A30%3A00Z",
                                   # shapes clients and proxies send, which the listing always took
                                   b"limit=5&", b"&limit=5", b"status=failed&&limit=5", b"status",
                                   b"st%61tus=failed"])
def test_pairs_of_the_listings_parameters_pass(query: bytes) -> None:
    refuse_foreign_query(query)


@pytest.mark.parametrize("query", [b"550e8400-e29b-41d4-a716-446655440000", b'{"urls":["https://a.example/x.jpg"]}',
                                   b"limit=5&foo=1", b"Limit=5", b"job=550e8400-e29b-41d4-a716-446655440000"])
def test_anything_else_is_422_naming_what_is_unknown(query: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        refuse_foreign_query(query)
    assert (refused.value.status, refused.value.code) == (422, "VALIDATION_ERROR")
    assert refused.value.details and refused.value.details["errors"][0]["loc"][0] == "query"
