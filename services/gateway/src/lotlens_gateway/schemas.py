"""Pydantic models of the API's bodies: they document the contract in the OpenAPI schema.

The hot paths build plain dicts (see `views.py`, `intake.py`); these models are the published
shape of those dicts, with examples.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JOB_ID = "550e8400-e29b-41d4-a716-446655440000"
TS = "2025-08-05T07:30:00Z"


class ErrorBody(BaseModel):
    """Every error answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "error": "Validation failed", "message": "Invalid image URLs detected", "code": "INVALID_IMAGE_URLS",
        "details": {"invalid_urls": ["ftp://example.com/car.jpg"]}}]})

    error: str = Field(description="Short title of the error class")
    message: str = Field(description="What went wrong, for humans")
    code: str = Field(description="Machine-readable code, e.g. INVALID_SIGNATURE, RATE_LIMIT_EXCEEDED")
    details: dict[str, Any] | None = Field(default=None, description="Facts behind the error, per code")


_ERRORS = {
    400: ("INVALID_JSON: the body is not a JSON object (or repeats a member, or holds NaN, Infinity, a "
          "number past a double or a lone surrogate); NESTING_TOO_DEEP: nested "
          "deeper than 32 levels outside `lots` or deeper than the parser allows; INTEGER_TOO_LONG: "
          "an integer of more than 32 digits; UNSUPPORTED_CONTENT_ENCODING: a compressed body "
          "(send it uncompressed)"),
    401: "MISSING_SIGNATURE: no signature in the body or the X-Signature header",
    403: "INVALID_SIGNATURE: no client's key verifies the signature",
    404: "JOB_NOT_FOUND: no such job for this client",
    408: ("REQUEST_TIMEOUT: the body's bytes stopped arriving for 15 s, or the body took longer than 120 s "
          "(a job body, over one lot's size: 300 s; details.body_gap_timeout_s, details.body_timeout_s), "
          "or a job body arrived at under 4 KiB/s on average after its first 5 s (details.min_bytes_per_s, "
          "details.min_rate_after_s); the connection is closed"),
    409: ("DUPLICATE_LOT_ID (details.duplicate_lot_ids; ids equal in Unicode NFC are one), "
          "IDEMPOTENCY_KEY_REUSED (same key, other body) or "
          "IDEMPOTENCY_KEY_IN_PROGRESS"),
    413: ("PAYLOAD_TOO_LARGE (body over 144 MiB, or a field other than `lots` over 64 KB), "
          "BATCH_SIZE_EXCEEDED (details.provided_lots, details.max_allowed) or LOT_TOO_LARGE "
          "(details.lot_index: a lot's JSON "
          "over 1 MB; details.lot_id: a lot whose event would not fit one Kafka message)"),
    422: ("VALIDATION_ERROR (details.errors; a webhook anywhere but `lots[].webhook` — `webhook`, "
          "`webhook_url` or `callback_url` beside the lots, a lot's `webhook_url` or `callback_url` — is "
          "one, named with `belongs_in`), INVALID_LANGUAGES (details.invalid_languages; "
          "details.use_instead maps a three-letter code such as `eng` to the BCP 47 tag to send; "
          "details.not_written says why a collection such as `sla` or a sign language such as `ase` "
          "is refused), "
          "INVALID_IMAGE_URLS / INVALID_WEBHOOK_URLS (details.invalid_urls: not http(s), credentials in the "
          "URL, or a webhook host the SSRF guard refuses by address or by DNS, a name that does not resolve "
          "included (not when the gateway's own DNS fails: accepted, judged again at delivery) — "
          "a job's first 100 distinct hosts by DNS, the others when their delivery connects —, "
          "details.reasons), "
          "TOO_MANY_IMAGES"),
    429: ("RATE_LIMIT_EXCEEDED: the Retry-After header says in how many seconds one more request "
          "will be accepted (X-RateLimit-Reset: that moment as a Unix time)"),
    431: ("HEADERS_TOO_LARGE: the request line and headers exceed 32 KiB (details.max_header_bytes); "
          "the connection is closed"),
    502: "OPENAI_UNAVAILABLE: the model API is down or rate-limits us",
    503: ("SERVICE_UNAVAILABLE: PostgreSQL is down; INTAKE_BUSY (submissions and retry-failed): the "
          "gateway is taking in as many big requests as it can; SHUTTING_DOWN: the gateway stopped (a "
          "restart) before answering; this request wrote nothing; retry after Retry-After seconds"),
    504: "OPENAI_TIMEOUT: the synchronous budget ran out",
}


# Results downloads and lots pages (downloads.py) are also refused for want of a place.
DOWNLOAD_ERRORS = {
    429: (_ERRORS[429] + "; also when the client already has as many results downloads and lots pages "
          "in flight as it may (default 4, details.reason `concurrent_downloads`): retry after "
          "Retry-After seconds or when one has finished (such a refusal does not count against the "
          "polling rate limit)"),
    503: ("SERVICE_UNAVAILABLE: PostgreSQL is down; DOWNLOADS_BUSY: the gateway is sending as many "
          "results downloads and lots pages as it takes (default 32); retry after Retry-After seconds"),
}


# A synchronous lot's model answers OpenAI billed before its 502 or 504 (added: they were not reported).
_PAID = ("details.usage: the tokens and estimated cost of the model answers OpenAI billed before it "
         "(the lot's `usage` shape; absent when none was)")
# A synchronous lot is also refused for want of a place (sync_slots.py); its 502 and 504 say more.
SUBMISSION_ERRORS = {
    429: (_ERRORS[429] + "; also when the client already has as many synchronous lots being described "
          "as it may (default 50, details.reason `concurrent_synchronous_lots`): retry after Retry-After "
          "seconds (such a refusal does not count against the rate limit)"),
    502: (_ERRORS[502] + "; a synchronous lot OpenAI rate-limited past its budget carries OpenAI's "
          "Retry-After; " + _PAID),
    503: (_ERRORS[503] + "; SYNCHRONOUS_BUSY: the gateway is describing as many synchronous lots as it "
          "takes (default 100)"),
    504: ("OPENAI_TIMEOUT: the synchronous budget (290 s from the request's arrival) ran out "
          "(details.timeout_seconds), or the model API timed out before it did (the message says which); "
          + _PAID),
}


def error_responses(*statuses: int, own: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses; `own` describes the statuses a
    route answers with codes of its own (not the shared ones)."""
    described = {**_ERRORS, **(own or {})}
    return {status: {"model": ErrorBody, "description": described[status]}
            for status in sorted({*statuses, *(own or {})})}


class ImageIn(BaseModel):
    """One image of a lot."""

    url: str = Field(description="http(s) URL of the photo (≤ 10 MB, an image/* type), without credentials",
                     examples=["https://example.com/bmw-front.jpg"])


class LotIn(BaseModel):
    """One lot of a request."""

    lot_id: str = Field(max_length=256, description="Unique within the request as compared in Unicode NFC "
                        "(kept as sent), ≤ 256 characters (`LOTLENS_MAX_LOT_ID_CHARS`), no control or "
                        "format characters (U+200B, U+FEFF, U+202E, line breaks) nor any other that "
                        "shows nothing (U+034F, variation selectors, Hangul fillers)", examples=["batch-001"])
    additional_info: str = Field(default="", max_length=10_000,
                                 description="The auction's notes about the lot, ≤ 10,000 characters "
                                 "(`LOTLENS_MAX_ADDITIONAL_INFO_CHARS`)",
                                 examples=["2019 Mercedes C-Class, minor rear damage"])
    images: list[ImageIn] = Field(default_factory=list, max_length=500, description=(
        "At most 20 in synchronous mode, 500 in batch mode (what one model request takes; "
        "`LOTLENS_MAX_BATCH_IMAGES`). No credentials (`user:pass@`) in URLs."))
    webhook: str | None = Field(default=None, description="Batch mode: where the results are POSTed; lots "
                                "sharing a URL share one delivery. Its host must be public (refused at "
                                "intake by address or DNS otherwise)", examples=["https://your-app.com/webhooks/done"])


class SubmissionRequest(BaseModel):
    """The body of `POST /api/v1/generate-descriptions`."""

    signature: str | None = Field(default=None, description="sha256=<hex> (or bare hex) over the lots",
                                  examples=["sha256=5d41402abc4b2a76b9719d911017c592"])
    version: str = Field(default="1.0.0", description="Echoed in the results")
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1, max_length=10,
                                 description="1 to 10 BCP 47 language tags, any case (`en`, `pt-BR`, "
                                             "`zh-Hant`), echoed canonical (`EN` → `en`, `iw` → `he`; "
                                             "spellings of one tag merge)",
                                 examples=[["en", "ru", "pt-BR"]])
    lots: list[LotIn] = Field(min_length=1, max_length=50_000,
                              description="1 lot: synchronous; 2 to 50,000: batch")


class Description(BaseModel):
    """A lot's description in one language."""

    language: str = Field(examples=["en"])
    damages: str = Field(description="HTML made of <p> paragraphs",
                         examples=["<p>Minor rear-end collision damage.</p>"])


class TokenUsage(BaseModel):
    """Tokens of the model answers by kind, and their estimated cost by the configured prices."""

    input_tokens: int
    cached_input_tokens: int = Field(description="Part of input_tokens, billed at the cached price")
    output_tokens: int
    reasoning_tokens: int = Field(description="Part of output_tokens")
    estimated_cost_usd: float | None = Field(description="None when a model has no configured price")


class JobTokenUsage(TokenUsage):
    """A finished job's usage in all and per model (Batch API answers priced at its discount)."""

    by_model: dict[str, TokenUsage]


class LotResult(BaseModel):
    """A described (or failed) lot. A failed lot's `descriptions` are empty; the texts it keeps are
    in `partial_descriptions`."""

    lot_id: str
    status: Literal["completed", "failed", "pending", "processing", "translating", "cancelled"]
    processed_at: str | None = None
    processed_images: int
    descriptions: list[Description] = Field(description=(
        "One entry per requested language on a completed lot; empty on a failed one (its kept texts "
        "are in `partial_descriptions`)"))
    missing_images: list[str] = Field(description="Image URLs that could not be fetched")
    error_message: str | None = Field(default=None, description="Why a failed lot failed")
    partial_descriptions: list[Description] | None = Field(default=None, description=(
        "Added, on failed lots: the texts a lot whose translation failed keeps, paid for: its English "
        "(when asked for) and the languages translated before the failure, in the order asked; empty "
        "for one that failed before (no usable image). Not a finished lot's: check `status`"))
    missing_languages: list[str] | None = Field(default=None, description=(
        "Added, on failed lots: the requested languages the lot has no text in (not in "
        "`partial_descriptions`); one that failed before its English lists every language"))
    usage: TokenUsage | None = Field(default=None, description="Added: the lot's tokens and estimated cost")


class SyncResult(BaseModel):
    """Synchronous answer (200)."""

    version: str
    processing_mode: Literal["synchronous"]
    total_lots: Literal[1]
    processed_at: str = Field(examples=[TS])
    lots: list[LotResult]


class BatchAccepted(BaseModel):
    """Batch answer (201)."""

    job_id: str = Field(examples=[JOB_ID])
    status: Literal["accepted"]
    created_at: str = Field(examples=[TS])
    total_lots: int = Field(examples=[2])
    languages: list[str] = Field(examples=[["en", "fr", "de"]])
    estimated_completion: str = Field(examples=["2025-08-05T08:30:00Z"])
    processing_mode: Literal["batch"]
    webhook_configured: bool


class Health(BaseModel):
    """`GET /health` on the API port: the contract's fields (the detailed report is on the ops port)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["healthy", "degraded", "unhealthy"]
    service: Literal["lotlens-gateway"]
    timestamp: str
    version: str
    database: Literal["connected", "disconnected"]
    background_worker: Literal["running", "degraded", "unknown"]


class ImageValidationRequest(BaseModel):
    """`POST /api/v1/test-image-validation` body."""

    urls: list[str] = Field(min_length=1, max_length=100, examples=[["https://example.com/car1.jpg"]])


class ImageValidation(BaseModel):
    """Which URLs are usable."""

    valid_urls: list[str]
    unreachable_urls: list[str]
    threshold_met: bool = Field(description="At least one and at least half of the URLs are usable")
    reasons: dict[str, str] = Field(description=(
        "Why each unreachable URL is unusable. A host name that does not resolve and one that resolves "
        "to a non-public address get the same reason (`<host> does not resolve to a public address`)"))


# Bodies the routes read themselves: added to the OpenAPI components by `app.py`.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (SubmissionRequest, ImageValidationRequest)
