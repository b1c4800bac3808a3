"""The SDK reads a failed lot's kept descriptions and the languages it lacks."""

from __future__ import annotations

from lotlens_client import LotResult


def test_a_lot_failed_at_translation_reads_its_english_and_the_languages_it_lacks() -> None:
    lot = LotResult.from_json({
        "lot_id": "lot-7", "status": "failed", "processed_images": 3, "missing_images": [],
        "descriptions": [{"language": "en", "damages": "<p>Dent.</p>"}],
        "missing_languages": ["ru", "de"], "error_message": "gave up after 3 attempts"})
    assert lot.description("en") == "<p>Dent.</p>" and lot.description("ru") is None
    assert lot.missing_languages == ("ru", "de")


def test_a_lot_from_an_older_service_has_no_languages_missing() -> None:
    lot = LotResult.from_json({"lot_id": "lot-1", "status": "completed", "descriptions": []})
    assert lot.missing_languages == ()
