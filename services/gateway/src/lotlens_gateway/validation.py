"""Validation of a submission body (pure: no I/O), fast enough for 50,000 lots.

The body is the orjson-parsed document; plain loops instead of per-lot pydantic models keep a
25 MB request well under a second. The first failing rule decides the answer, in this order:
shape of `lots` → lot count → languages → a webhook beside the lots → shape of each lot (lot
ids: no control, format or line-break characters; no webhook under another name) → duplicate lot ids (equal
in NFC) → image URLs → webhook URLs → (one lot only) image count. Lot ids are kept as sent;
lot_ids.py says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from lotlens_common.model.languages import canonical_tag, not_written, two_letter_tag
from lotlens_common.urls import invalid_http_urls, literal_refusal
from lotlens_gateway.errors import ApiError, validation_failed
from lotlens_gateway.lot_ids import comparison_form, hidden_characters, hidden_characters_problem

DEFAULT_VERSION = "1.0.0"
DEFAULT_LANGUAGES = ("en",)
# Lists in error details are cut here; the count fields tell the full size.
MAX_LISTED = 100
MAX_SHAPE_ERRORS = 20
# Where a webhook URL is put by mistake. The contract takes it per lot, in `lots[].webhook`; sent
# under these names it was ignored and the job accepted with `webhook_configured: false`, its
# integrator believing webhooks set and never getting one. Only these names are refused, and only
# holding something (a client serialising its unset options as null asks for no webhook): other
# unknown fields are not, as neither v2.0 nor 1.x refused them.
REQUEST_WEBHOOK_MISSPELLINGS = ("webhook", "webhook_url", "callback_url")
LOT_WEBHOOK_MISSPELLINGS = ("webhook_url", "callback_url")
_UNSET = (None, "")
_WEBHOOK_HOME = "lots[].webhook"


class LotRequest(NamedTuple):
    """One lot as the client sent it, checked (a tuple: 50,000 of them are built per request)."""

    lot_id: str
    additional_info: str
    image_urls: tuple[str, ...]
    webhook: str | None


@dataclass(frozen=True)
class Limits:
    """The request limits validation enforces."""

    max_lots: int = 50_000
    max_languages: int = 10
    max_sync_images: int = 20
    max_lot_id_chars: int = 256
    max_additional_info_chars: int = 10_000
    # One lot is one OpenAI request, which takes at most 500 images.
    max_batch_images: int = 500
    allow_loopback_urls: bool = False


@dataclass(frozen=True)
class Submission:
    """A valid request: its API version, languages and lots."""

    version: str
    languages: tuple[str, ...]
    lots: list[LotRequest]

    @property
    def is_synchronous(self) -> bool:
        """Exactly one lot is answered synchronously."""
        return len(self.lots) == 1

    @property
    def webhook_urls(self) -> tuple[str, ...]:
        """The distinct webhook URLs of the lots, in first-seen order."""
        return tuple(dict.fromkeys(lot.webhook for lot in self.lots if lot.webhook))


# The members of a submission validation reads (the others are ignored, above).
_READ_MEMBERS = ("lots", "version", "languages", *REQUEST_WEBHOOK_MISSPELLINGS)


def members_read(document: dict[str, Any]) -> dict[str, Any]:
    """The document with only the members validation reads: all a synchronous lot keeps through
    its model calls (any other member may be up to 64 KiB, and there may be many)."""
    return {name: document[name] for name in _READ_MEMBERS if name in document}


def rate_mode(document: dict[str, Any]) -> str:
    """The rate-limit bucket of a submission, known before validation: `sync` or `batch`."""
    lots = document.get("lots")
    return "sync" if isinstance(lots, list) and len(lots) == 1 else "batch"


def no_lots() -> ApiError:
    """422 for a body whose `lots` is missing, empty or not an array."""
    return validation_failed("`lots` must be a non-empty array of lot objects",
                             {"errors": [{"field": "lots", "problem": "missing, empty or not an array"}]})


def parse_submission(document: dict[str, Any], limits: Limits) -> Submission:
    """A checked Submission, or the ApiError the contract prescribes for the first broken rule."""
    lots = document.get("lots")
    if not isinstance(lots, list) or not lots:
        raise no_lots()
    if len(lots) > limits.max_lots:
        raise ApiError(413, "BATCH_SIZE_EXCEEDED",
                       f"Batch size exceeds maximum limit of {limits.max_lots:,} lots",
                       details={"provided_lots": len(lots), "max_allowed": limits.max_lots})
    version = document.get("version", DEFAULT_VERSION)
    if not isinstance(version, str) or not version:
        raise validation_failed("`version` must be a non-empty string",
                                {"errors": [{"field": "version", "problem": "not a non-empty string"}]})
    languages = _languages(document.get("languages", list(DEFAULT_LANGUAGES)), limits)
    _no_webhook_beside_the_lots(document)
    parsed = _lots(lots, limits)
    _no_duplicates(parsed)
    _urls_valid(parsed, limits.allow_loopback_urls)
    if len(parsed) == 1 and len(parsed[0].image_urls) > limits.max_sync_images:
        count = len(parsed[0].image_urls)
        raise validation_failed(
            f"A synchronous request takes at most {limits.max_sync_images} images, got {count}",
            {"provided_images": count, "max_allowed": limits.max_sync_images}, code="TOO_MANY_IMAGES")
    return Submission(version=version, languages=languages, lots=parsed)


def _languages(value: Any, limits: Limits) -> tuple[str, ...]:
    """The requested languages as canonical BCP 47 tags, in order, each once.

    Spellings of one tag merge, first place kept: `EN` and `en` are one language, so are `iw` and
    `he` (the registry's Preferred-Value); the limit counts the merged tags. A client that sends
    both spellings reads the canonical one once in `languages` and in the descriptions.
    """
    if not isinstance(value, list) or not value:
        raise validation_failed("`languages` must be a non-empty array of BCP 47 language tags",
                                {"invalid_languages": [], "max_allowed": limits.max_languages},
                                code="INVALID_LANGUAGES")
    tags = [canonical_tag(code) if isinstance(code, str) else None for code in value]
    invalid = [code for code, tag in zip(value, tags, strict=True) if tag is None]
    if invalid:
        raise _unknown_languages(invalid[:MAX_LISTED])
    unwritten = {code: reason for code, tag in zip(value, tags, strict=True)
                 if tag is not None and (reason := not_written(tag))}
    if unwritten:
        listed = dict(list(unwritten.items())[:MAX_LISTED])
        raise validation_failed(
            "Language tags that name no one written language to translate into: "
            + "; ".join(f'"{code}" ({reason})' for code, reason in listed.items()),
            {"invalid_languages": list(listed), "not_written": listed}, code="INVALID_LANGUAGES")
    languages = tuple(dict.fromkeys(tag for tag in tags if tag is not None))
    if len(languages) > limits.max_languages:
        raise validation_failed(f"At most {limits.max_languages} languages per request",
                                {"invalid_languages": [], "provided_languages": len(languages),
                                 "max_allowed": limits.max_languages}, code="INVALID_LANGUAGES")
    return languages


def _unknown_languages(invalid: list[Any]) -> ApiError:
    """422 listing the unknown tags, and the tag to send instead of a three-letter ISO 639-2 code."""
    use_instead = {code: tag for code in invalid if isinstance(code, str) and (tag := two_letter_tag(code))}
    message = "Unknown language tags (BCP 47 expected, any case: \"de\", \"pt-BR\", \"zh-Hant\", \"sr-Latn\")"
    details: dict[str, Any] = {"invalid_languages": invalid}
    if use_instead:
        # RFC 5646 §2.2.1: where ISO 639-1 has a two-letter code, only that one is registered.
        pairs = ", ".join(f'"{code}" → "{tag}"' for code, tag in use_instead.items())
        message += f"; BCP 47 writes a language with its two-letter code where it has one: {pairs}"
        details["use_instead"] = use_instead
    return validation_failed(message, details, code="INVALID_LANGUAGES")


def _no_webhook_beside_the_lots(document: dict[str, Any]) -> None:
    misplaced = [name for name in REQUEST_WEBHOOK_MISSPELLINGS if document.get(name) not in _UNSET]
    if misplaced:
        names = ", ".join(f"`{name}`" for name in misplaced)
        verb = "is not a field" if len(misplaced) == 1 else "are not fields"
        raise validation_failed(
            f"{names} {verb} of the request: a webhook is set per lot, in `{_WEBHOOK_HOME}`",
            {"errors": [{"field": name, "problem": "misplaced: a webhook is set per lot",
                         "belongs_in": _WEBHOOK_HOME} for name in misplaced]})


def _lots(lots: list[Any], limits: Limits) -> list[LotRequest]:
    parsed: list[LotRequest] = []
    errors: list[dict[str, Any]] = []
    max_id, max_info = limits.max_lot_id_chars, limits.max_additional_info_chars
    max_images = limits.max_batch_images
    for index, lot in enumerate(lots):
        # Fast path for a well-formed lot; the slow path below only explains what is wrong.
        if type(lot) is dict:
            lot_id, info, webhook = lot.get("lot_id"), lot.get("additional_info"), lot.get("webhook")
            urls = _image_urls(lot.get("images"))
            if (type(lot_id) is str and lot_id and not lot_id.isspace() and len(lot_id) <= max_id
                    and not hidden_characters(lot_id)
                    and (info is None or (type(info) is str and len(info) <= max_info))
                    and (webhook is None or type(webhook) is str)
                    and urls is not None and len(urls) <= max_images
                    # LOT_WEBHOOK_MISSPELLINGS, spelt out: a loop per lot would cost 50,000 loops
                    and lot.get("webhook_url") in _UNSET and lot.get("callback_url") in _UNSET):
                parsed.append(LotRequest(lot_id, info or "", urls, webhook or None))
                continue
        errors.extend({"lot_index": index, "field": f, "problem": p}
                      | ({"belongs_in": _WEBHOOK_HOME} if f in LOT_WEBHOOK_MISSPELLINGS else {})
                      for f, p in _lot_problems(lot, limits))
        if len(errors) >= MAX_SHAPE_ERRORS:
            break
    if errors:
        raise validation_failed("Some lots are malformed", {"errors": errors[:MAX_SHAPE_ERRORS]})
    return parsed


def _image_urls(images: Any) -> tuple[str, ...] | None:
    """The URLs of a well-formed `images` array (absent means none), or None when it is malformed."""
    if images is None:
        return ()
    if type(images) is not list:
        return None
    urls = []
    for image in images:
        url = image.get("url") if type(image) is dict else None
        if type(url) is not str:
            return None
        urls.append(url)
    return tuple(urls)


def _lot_problems(lot: Any, limits: Limits) -> Iterator[tuple[str, str]]:
    if not isinstance(lot, dict):
        yield "lot", "not an object"
        return
    lot_id = lot.get("lot_id")
    if not isinstance(lot_id, str) or not lot_id.strip():
        yield "lot_id", "missing or not a non-empty string"
    elif len(lot_id) > limits.max_lot_id_chars:
        yield "lot_id", f"longer than {limits.max_lot_id_chars} characters"
    elif hidden := hidden_characters(lot_id):
        yield "lot_id", hidden_characters_problem(hidden)
    info = lot.get("additional_info")
    if info is not None and not isinstance(info, str):
        yield "additional_info", "not a string"
    elif info is not None and len(info) > limits.max_additional_info_chars:
        yield "additional_info", f"longer than {limits.max_additional_info_chars} characters"
    webhook = lot.get("webhook")
    if webhook is not None and not isinstance(webhook, str):
        yield "webhook", "not a string"
    for name in LOT_WEBHOOK_MISSPELLINGS:
        if lot.get(name) not in _UNSET:
            yield name, "misplaced: a lot's webhook goes in `webhook`"
    images = lot.get("images")
    if images is None:
        return
    if not isinstance(images, list):
        yield "images", "not an array"
        return
    if len(images) > limits.max_batch_images:
        yield "images", f"more than {limits.max_batch_images} (what one model request takes)"
    for position, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            yield f"images[{position}]", "not an object with a string `url`"


def _no_duplicates(lots: list[LotRequest]) -> None:
    first_sent: dict[str, str] = {}  # comparison form → the id as first sent
    duplicates: dict[str, None] = {}
    for lot in lots:
        key = comparison_form(lot.lot_id)
        if key in first_sent:
            duplicates[first_sent[key]] = None
        else:
            first_sent[key] = lot.lot_id
    if duplicates:
        listed = list(duplicates)
        raise ApiError(409, "DUPLICATE_LOT_ID",
                       "Each lot_id may appear only once per request (compared in Unicode NFC: \"ë\" "
                       "written as one character or as \"e\" + U+0308 is one id)",
                       details={"duplicate_lot_ids": listed[:MAX_LISTED], "duplicate_count": len(listed)})


def _urls_valid(lots: list[LotRequest], allow_loopback: bool) -> None:
    invalid_images = invalid_http_urls(url for lot in lots for url in lot.image_urls)
    if invalid_images:
        raise validation_failed("Invalid image URLs detected (absolute http or https URLs expected)",
                                {"invalid_urls": invalid_images[:MAX_LISTED],
                                 "invalid_count": len(invalid_images)},
                                code="INVALID_IMAGE_URLS")
    webhooks = dict.fromkeys(lot.webhook for lot in lots if lot.webhook is not None)
    invalid_webhooks = invalid_http_urls(webhooks)
    if not invalid_webhooks:  # the SSRF guard's verdict on hosts written as addresses, at intake
        refused = {url: reason for url in webhooks if (reason := literal_refusal(url, allow_loopback))}
        if refused:
            raise validation_failed("Webhook URLs on non-public addresses are refused",
                                    {"invalid_urls": list(refused)[:MAX_LISTED],
                                     "invalid_count": len(refused),
                                     "reasons": dict(list(refused.items())[:MAX_LISTED])},
                                    code="INVALID_WEBHOOK_URLS")
    if invalid_webhooks:
        raise validation_failed("Invalid webhook URLs detected (absolute http or https URLs expected)",
                                {"invalid_urls": invalid_webhooks[:MAX_LISTED],
                                 "invalid_count": len(invalid_webhooks)},
                                code="INVALID_WEBHOOK_URLS")
