"""Submission validation without I/O: what is accepted, and which error answers what."""

from __future__ import annotations

from typing import Any

import pytest

from lotlens_gateway.errors import ApiError
from lotlens_gateway.validation import Limits, LotRequest, members_read, parse_submission, rate_mode

LIMITS = Limits(max_lots=5, max_languages=3, max_sync_images=2, max_lot_id_chars=10)


def lot(lot_id: str = "a", **fields: Any) -> dict[str, Any]:
    images = [{"url": "https://x.example/1.jpg"}]
    return {"lot_id": lot_id, "additional_info": "notes", "images": images, **fields}


def refused(document: dict[str, Any], limits: Limits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_submission(document, limits)
    return caught.value


def test_a_valid_batch_keeps_the_lots_in_order_with_defaults_filled_in() -> None:
    submission = parse_submission({"lots": [lot("a", webhook="https://h.example/x"),
                                            {"lot_id": "b", "additional_info": None}]}, LIMITS)
    assert submission.version == "1.0.0" and submission.languages == ("en",)
    assert submission.lots == [LotRequest("a", "notes", ("https://x.example/1.jpg",), "https://h.example/x"),
                               LotRequest("b", "", (), None)]
    assert not submission.is_synchronous
    assert submission.webhook_urls == ("https://h.example/x",)


def test_languages_are_deduplicated_in_order() -> None:
    submission = parse_submission({"languages": ["de", "en", "de"], "lots": [lot()]}, LIMITS)
    assert submission.languages == ("de", "en") and submission.is_synchronous


def test_an_empty_webhook_means_none() -> None:
    assert parse_submission({"lots": [lot(webhook=""), lot("b")]}, LIMITS).lots[0].webhook is None


@pytest.mark.parametrize("lots", [None, [], "x", {"lot_id": "a"}])
def test_lots_must_be_a_non_empty_array(lots: Any) -> None:
    error = refused({"lots": lots})
    assert (error.status, error.code) == (422, "VALIDATION_ERROR")


def test_too_many_lots_is_413_before_anything_else_is_looked_at() -> None:
    error = refused({"languages": ["xx"], "lots": [lot(str(i)) for i in range(6)]})
    assert (error.status, error.code) == (413, "BATCH_SIZE_EXCEEDED")
    assert error.details == {"provided_lots": 6, "max_allowed": 5}


@pytest.mark.parametrize(("languages", "canonical"), [
    (["EN", "pt-br", "ZH-HANT"], ("en", "pt-BR", "zh-Hant")),
    (["sr-latn", "DE"], ("sr-Latn", "de")),
    (["es-419", "zh-hans-cn", "iw"], ("es-419", "zh-Hans-CN", "he")),
    # The registry's Preferred-Values only, never CLDR's aliases (`tl` was `fil`, `prs` was `fa-AF`).
    (["tl", "PRS", "sh"], ("tl", "prs", "sh")),
    (["in", "mo", "zh-YUE"], ("id", "ro", "yue")),
    (["i-klingon", "zh-cmn-hans", "zh-guoyu"], ("tlh", "cmn-Hans", "cmn")),
    (["my-BU", "sl-rozaj-biske"], ("my-MM", "sl-rozaj-biske")),  # variants keep their order
])
def test_bcp47_tags_in_any_case_are_kept_canonical(languages: list[str], canonical: tuple[str]) -> None:
    assert parse_submission({"languages": languages, "lots": [lot()]}, LIMITS).languages == canonical


def test_spellings_of_one_tag_merge_in_first_place_and_count_once_toward_the_limit() -> None:
    languages = ["EN", "iw", "en", "de", "he", "HE", "DE"]
    assert parse_submission({"languages": languages, "lots": [lot()]}, LIMITS).languages == ("en", "he", "de")


@pytest.mark.parametrize(("languages", "use_instead"), [
    (["eng"], {"eng": "en"}), (["PER", "fas-IR"], {"PER": "fa", "fas-IR": "fa-IR"}),
    (["ger-at", "tgl", "xx"], {"ger-at": "de-AT", "tgl": "tl"})])
def test_three_letter_codes_of_languages_with_a_two_letter_one_are_refused_naming_it(
        languages: list[str], use_instead: dict[str, str]) -> None:
    error = refused({"languages": ["en", *languages], "lots": [lot()]})
    assert (error.status, error.code) == (422, "INVALID_LANGUAGES")
    assert error.details == {"invalid_languages": languages, "use_instead": use_instead}
    assert all(f'"{code}" → "{tag}"' in error.message for code, tag in use_instead.items())


@pytest.mark.parametrize(("languages", "invalid"), [
    (["en", "xx"], ["xx"]), ([1, "de"], [1]), (["en-XX", "pt-BR"], ["en-XX"]),
    (["und", "x-pig"], ["und", "x-pig"]), (["en_US"], ["en_US"]), (["qaa"], ["qaa"]),
    (["de-", ""], ["de-", ""]), (["en-" + "a" * 40], ["en-" + "a" * 40])])
def test_unknown_language_codes_are_listed(languages: list[Any], invalid: list[Any]) -> None:
    error = refused({"languages": languages, "lots": [lot()]})
    assert (error.status, error.code) == (422, "INVALID_LANGUAGES")
    assert error.details == {"invalid_languages": invalid}


@pytest.mark.parametrize(("languages", "not_written"), [
    (["sgn", "sla"], {"sgn": "Sign languages: a collection of languages, not one",
                      "sla": "Slavic languages: a collection of languages, not one"}),
    (["ase", "sgn-ase"], {"ase": "American Sign Language: a sign language, with no written form",
                          "sgn-ase": "American Sign Language: a sign language, with no written form"}),
    (["de", "BFI"], {"BFI": "British Sign Language: a sign language, with no written form"})])
def test_collections_and_sign_languages_are_refused_saying_why(
        languages: list[str], not_written: dict[str, str]) -> None:
    error = refused({"languages": languages, "lots": [lot()]})
    assert (error.status, error.code) == (422, "INVALID_LANGUAGES")
    assert error.details == {"invalid_languages": list(not_written), "not_written": not_written}


@pytest.mark.parametrize("languages", [["tlh", "eo"], ["smn", "se"], ["yue", "cmn"], ["sr-Latn", "nv"]])
def test_single_written_languages_of_any_kind_are_accepted(languages: list[str]) -> None:
    # Klingon and Esperanto are written; so are Sami and Chinese languages, one at a time.
    assert parse_submission({"languages": languages, "lots": [lot()]}, LIMITS).languages == tuple(languages)


@pytest.mark.parametrize("languages", [[], "en", ["en", "de", "fr", "es"]])
def test_languages_must_be_one_to_the_maximum(languages: Any) -> None:
    assert refused({"languages": languages, "lots": [lot()]}).code == "INVALID_LANGUAGES"


def test_shape_errors_name_the_lot_and_the_field() -> None:
    error = refused({"lots": [lot(), {"lot_id": "b", "images": [{"url": 5}]}, "c", lot("x" * 11)]})
    assert error.code == "VALIDATION_ERROR" and error.details is not None
    assert error.details["errors"] == [
        {"lot_index": 1, "field": "images[0]", "problem": "not an object with a string `url`"},
        {"lot_index": 2, "field": "lot", "problem": "not an object"},
        {"lot_index": 3, "field": "lot_id", "problem": "longer than 10 characters"},
    ]


def test_a_non_string_version_is_a_validation_error() -> None:
    assert refused({"version": 2, "lots": [lot()]}).code == "VALIDATION_ERROR"


def test_duplicate_lot_ids_are_a_409_listing_each_once() -> None:
    error = refused({"lots": [lot("a"), lot("b"), lot("a"), lot("a")]})
    assert (error.status, error.code) == (409, "DUPLICATE_LOT_ID")
    assert error.details == {"duplicate_lot_ids": ["a"], "duplicate_count": 1}


def test_lot_ids_equal_in_nfc_are_the_409_of_exact_duplicates_named_as_first_sent() -> None:
    composed, decomposed = "Citro\u00ebn", "Citroe\u0308n"  # LIMITS allow 10 characters
    error = refused({"lots": [lot(decomposed), lot("b"), lot(composed), lot(decomposed)]})
    assert (error.status, error.code) == (409, "DUPLICATE_LOT_ID") and "NFC" in error.message
    assert error.details == {"duplicate_lot_ids": [decomposed], "duplicate_count": 1}


def test_lot_ids_are_kept_as_sent_in_any_script_and_with_any_visible_spacing() -> None:
    # Decomposed, Japanese, an emoji, a no-break space, Hebrew.
    ids = ["Citroe\u0308n", "ロット-7", "\U0001F697-1", "LOT\u00a01", "\u05d0\u05d1-2"]
    parsed = parse_submission({"lots": [lot(lot_id) for lot_id in ids]}, LIMITS)
    assert [request.lot_id for request in parsed.lots] == ids


@pytest.mark.parametrize(("lot_id", "named"), [
    ("\u200b", "U+200B ZERO WIDTH SPACE"), ("\ufeffA", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("A-1\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"), ("A\tB", "U+0009:"), ("A\u00adB", "U+00AD SOFT HYPHEN"),
    ("\u2066A\u2069\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE, U+2069 POP DIRECTIONAL ISOLATE:")])
def test_lot_ids_with_control_or_format_characters_are_refused_naming_them(lot_id: str, named: str) -> None:
    error = refused({"lots": [lot("ok"), lot(lot_id)]})
    assert (error.status, error.code) == (422, "VALIDATION_ERROR") and error.details is not None
    [problem] = error.details["errors"]
    assert (problem["lot_index"], problem["field"]) == (1, "lot_id") and named in problem["problem"]


def test_every_character_unicode_ends_a_line_at_is_refused_in_a_lot_id() -> None:
    # Python's `str.splitlines` breaks where Unicode does (UAX #14's mandatory breaks, and the
    # separators U+001C-U+001E): CR, LF, U+000B, U+000C, U+0085 are controls; U+2028 LINE SEPARATOR
    # and U+2029 PARAGRAPH SEPARATOR are not, and were accepted.
    breaks = [char for char in map(chr, range(0x110000)) if f"A{char}B".splitlines() == ["A", "B"]]
    assert {"\n", "\r", "\x85", "\u2028", "\u2029"} <= set(breaks)
    error = refused({"lots": [lot(f"A{char}B") for char in breaks]}, Limits(max_lots=len(breaks)))
    assert error.details is not None
    named = {problem["lot_index"]: problem["problem"] for problem in error.details["errors"]}
    accepted = [f"U+{ord(char):04X}" for index, char in enumerate(breaks) if index not in named]
    assert accepted == [], f"line breaks accepted in a lot id: {accepted}"
    assert all(f"U+{ord(char):04X}" in named[index] for index, char in enumerate(breaks))


# Default_Ignorable_Code_Point characters outside Cc and Cf: they render as nothing, so "A1" and
# "A1" + U+034F were two lots that look one.
SHOWING_NOTHING = ["\u034f", "\ufe00", "\ufe0f", "\U000e0100", "\U000e01ef", "\u3164", "\u115f", "\u1160",
                   "\uffa0", "\u17b4", "\u180b"]


@pytest.mark.parametrize("char", SHOWING_NOTHING, ids=lambda char: f"U+{ord(char):04X}")
def test_a_lot_id_with_a_character_that_shows_nothing_is_refused_naming_it(char: str) -> None:
    error = refused({"lots": [lot("A1"), lot(f"A1{char}")]})
    assert (error.status, error.code) == (422, "VALIDATION_ERROR"), error.body()
    assert error.details is not None
    [problem] = error.details["errors"]
    assert (problem["lot_index"], problem["field"]) == (1, "lot_id")
    assert f"U+{ord(char):04X}" in problem["problem"]


def test_bad_image_urls_are_listed_once_each() -> None:
    bad = [{"url": "ftp://x.example/a.jpg"}, {"url": "/relative.jpg"}, {"url": "ftp://x.example/a.jpg"}]
    error = refused({"lots": [lot("a", images=bad), lot("b")]})
    assert (error.status, error.code) == (422, "INVALID_IMAGE_URLS")
    assert error.details == {"invalid_urls": ["ftp://x.example/a.jpg", "/relative.jpg"], "invalid_count": 2}


def test_bad_webhooks_have_their_own_code() -> None:
    error = refused({"lots": [lot("a", webhook="mailto:x@example.com"), lot("b")]})
    assert (error.status, error.code) == (422, "INVALID_WEBHOOK_URLS")
    assert error.details == {"invalid_urls": ["mailto:x@example.com"], "invalid_count": 1}


def test_a_misplaced_webhook_is_refused_among_the_other_shape_errors_and_an_unset_one_is_not() -> None:
    error = refused({"lots": [lot("a", callback_url="https://h.example/x"), "b", lot("c", webhook_url=[])]})
    assert error.details is not None and error.details["errors"] == [
        {"lot_index": 0, "field": "callback_url", "problem": "misplaced: a lot's webhook goes in `webhook`",
         "belongs_in": "lots[].webhook"},
        {"lot_index": 1, "field": "lot", "problem": "not an object"},
        {"lot_index": 2, "field": "webhook_url", "problem": "misplaced: a lot's webhook goes in `webhook`",
         "belongs_in": "lots[].webhook"},
    ]
    # Unset spellings take the fast path's way: the lot is kept, not dropped.
    kept = parse_submission({"webhook": "", "lots": [lot("a", webhook_url=None), lot("b", callback_url="")]},
                            LIMITS)
    assert [request.lot_id for request in kept.lots] == ["a", "b"]


def test_the_image_limit_applies_to_one_lot_only() -> None:
    three = [{"url": f"https://x.example/{i}.jpg"} for i in range(3)]
    error = refused({"lots": [lot("a", images=three)]})
    assert (error.status, error.code) == (422, "TOO_MANY_IMAGES")
    assert len(parse_submission({"lots": [lot("a", images=three), lot("b")]}, LIMITS).lots) == 2


def test_the_rate_bucket_is_known_before_validation() -> None:
    assert rate_mode({"lots": [{}]}) == "sync"
    assert rate_mode({"lots": [{}, {}]}) == "batch"
    assert rate_mode({"lots": "garbage"}) == "batch"


def test_the_contract_error_body_carries_details_only_when_there_are_some() -> None:
    assert ApiError(400, "INVALID_JSON", "bad").body() == {
        "error": "Invalid request format", "message": "bad", "code": "INVALID_JSON"}
    assert refused({"lots": [lot("a"), lot("a")]}).body()["details"]["duplicate_lot_ids"] == ["a"]


def test_a_lot_out_of_its_intake_slot_keeps_only_the_members_validation_reads() -> None:
    # A one-lot body may carry many large members of its client's own: kept through its model
    # calls (300 s) with no intake slot bounding them, they made a memory hole.
    document = {"signature": "sha256=ab", "lots": [lot()], "languages": ["de"], "webhook_url": "",
                **{f"note_{n}": "x" * 1000 for n in range(50)}}
    kept = members_read(document)
    assert kept == {"lots": [lot()], "languages": ["de"], "webhook_url": ""}
    assert parse_submission(kept, LIMITS) == parse_submission(document, LIMITS)
