"""Language tags and lot ids as integrators writing in every script send them, through a real gateway.

Tags are echoed in RFC 5646 canonical form: case, and the IANA registry's Preferred-Values only
(`iw` → `he`), never CLDR's aliases (`tl` stayed `tl`, not `fil`). Lot ids are kept as sent, but
two that are equal after NFC normalisation are one lot, and an id carrying a control or format
character (invisible, or reordering the text after it) or any line break Unicode names is refused.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, consume, make_lots

pytestmark = pytest.mark.integration

NFC = "Citro\u00ebn-42"
NFD = "Citroe\u0308n-42"


def refused(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error body, checked for its status, code and shape."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "code", "details"} and body["code"] == code
    return body


def with_ids(*lot_ids: str) -> list[dict[str, Any]]:
    lots = make_lots(len(lot_ids))
    for lot, lot_id in zip(lots, lot_ids, strict=True):
        lot["lot_id"] = lot_id
    return lots


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


@pytest.mark.parametrize("lot_count", [1, 2], ids=["sync", "batch"])
def test_collections_and_sign_languages_are_422_saying_why_no_text_is_written_in_them(
        gateway: Gateway, lot_count: int) -> None:
    # Registered tags, but none names one written language: `sla` was sent to the model as
    # "Slavic languages" and `sgn-US` (American Sign Language) as a language to write in.
    response = gateway.submit(make_lots(lot_count), languages=["en", "SLA", "sgn-US", "de", "art"])
    body = refused(response, 422, "INVALID_LANGUAGES")
    assert body["details"]["invalid_languages"] == ["SLA", "sgn-US", "art"]
    assert body["details"]["not_written"] == {
        "SLA": "Slavic languages: a collection of languages, not one",
        "sgn-US": "American Sign Language: a sign language, with no written form",
        "art": "Artificial languages: a collection of languages, not one"}


# A NUL is refused before validation (PostgreSQL cannot store it), so it is not among these.
HIDDEN = {"zero-width-space": ("\u200b", 0x200B), "byte-order-mark": ("\ufeff", 0xFEFF),
          "right-to-left-override": ("LOT-1\u202e", 0x202E), "newline": ("LOT\n2", 0x0A),
          "next-line": ("LOT-\u00853", 0x85), "line-separator": ("LOT-\u20284", 0x2028),
          "paragraph-separator": ("\u2029LOT-5", 0x2029)}


@pytest.mark.parametrize("lot_count", [1, 2], ids=["sync", "batch"])
@pytest.mark.parametrize(("lot_id", "code_point"), HIDDEN.values(), ids=HIDDEN.keys())
def test_lot_ids_with_control_format_or_line_break_characters_are_422_naming_the_lot(
        gateway: Gateway, lot_count: int, lot_id: str, code_point: int) -> None:
    lots = with_ids(lot_id, *(f"plain-{i}" for i in range(1, lot_count)))
    body = refused(gateway.submit(lots), 422, "VALIDATION_ERROR")
    [error] = body["details"]["errors"]
    assert (error["lot_index"], error["field"]) == (0, "lot_id")
    assert f"U+{code_point:04X}" in error["problem"]


def test_every_lot_with_a_hidden_character_is_listed(gateway: Gateway) -> None:
    body = refused(gateway.submit(with_ids("ok-1", "LOT-1\u202e", "ok-2", "\u200b")), 422, "VALIDATION_ERROR")
    errors = body["details"]["errors"]
    assert [(e["lot_index"], e["field"]) for e in errors] == [(1, "lot_id"), (3, "lot_id")]
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in errors[0]["problem"]
    assert "U+200B ZERO WIDTH SPACE" in errors[1]["problem"]


def test_lot_ids_equal_after_nfc_normalisation_are_the_409_of_exact_duplicates(gateway: Gateway) -> None:
    body = refused(gateway.submit(with_ids(NFC, "other", NFD)), 409, "DUPLICATE_LOT_ID")
    assert body["details"] == {"duplicate_lot_ids": [NFC], "duplicate_count": 1}
    assert "NFC" in body["message"]


def test_a_decomposed_lot_id_on_its_own_is_kept_as_sent(gateway: Gateway, settings: ServiceSettings) -> None:
    response = gateway.submit(with_ids(NFD, "other"))
    assert response.status_code == 201, response.text
    events = [envelope.event for _key, envelope in
              consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 3)]
    assert [event.lot_id for event in events if isinstance(event, LotSubmitted)] == [NFD, "other"]
