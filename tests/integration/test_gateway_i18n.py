"""Language tags as integrators from every language send them, through a real gateway.

Tags are echoed in RFC 5646 canonical form: case, and the IANA registry's Preferred-Values only
(`iw` → `he`), never CLDR's aliases (`tl` stayed `tl`, not `fil`).
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from lotlens_common.events import JobSubmitted
from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, consume, make_lots

pytestmark = pytest.mark.integration


def refused(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error body, checked for its status, code and shape."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "code", "details"} and body["code"] == code
    return body


def test_tags_are_canonical_by_case_and_registry_only_and_spellings_of_one_tag_merge(
        gateway: Gateway, settings: ServiceSettings) -> None:
    asked = ["PT-br", "pt-BR", "iw", "he", "EN", "tl", "prs", "in", "MO", "zh-yue"]
    response = gateway.submit(make_lots(2), languages=asked)
    assert response.status_code == 201, response.text
    canonical = ["pt-BR", "he", "en", "tl", "prs", "id", "ro", "yue"]
    assert response.json()["languages"] == canonical
    job_id = response.json()["job_id"]
    assert gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()["languages"] == canonical
    events = [envelope.event for _key, envelope in
              consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 1)]
    assert isinstance(events[0], JobSubmitted) and events[0].languages == tuple(canonical)


@pytest.mark.parametrize("lot_count", [1, 2], ids=["sync", "batch"])
def test_three_letter_codes_of_languages_with_a_two_letter_code_are_422_naming_the_code_to_use(
        gateway: Gateway, lot_count: int) -> None:
    response = gateway.submit(make_lots(lot_count), languages=["en", "eng", "PER", "deu-AT", "xx"])
    body = refused(response, 422, "INVALID_LANGUAGES")
    assert body["details"]["invalid_languages"] == ["eng", "PER", "deu-AT", "xx"]
    assert body["details"]["use_instead"] == {"eng": "en", "PER": "fa", "deu-AT": "de-AT"}
    assert '"eng" → "en"' in body["message"] and '"deu-AT" → "de-AT"' in body["message"]
