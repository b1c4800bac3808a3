"""The SDK reads a failed lot's kept descriptions (`partial_descriptions`; its `descriptions` stay
empty) and the languages it lacks."""

from __future__ import annotations

from lotlens_client import LotResult


def test_a_lot_failed_at_translation_reads_its_english_and_the_languages_it_lacks() -> None:
    lot = LotResult.from_json({
        "lot_id": "lot-7", "status": "failed", "processed_images": 3, "missing_images": [],
        "descriptions": [], "partial_descriptions": [{"language": "en", "damages": "<p>Dent.</p>"}],
        "missing_languages": ["ru", "de"], "error_message": "gave up after 3 attempts"})
    assert lot.descriptions == () and lot.description("en") is None
    assert [(d.language, d.damages) for d in lot.partial_descriptions] == [("en", "<p>Dent.</p>")]
    assert lot.missing_languages == ("ru", "de")


def test_a_lot_from_an_older_service_has_no_languages_missing() -> None:
    lot = LotResult.from_json({"lot_id": "lot-1", "status": "completed", "descriptions": []})
    assert lot.missing_languages == () and lot.partial_descriptions == ()
