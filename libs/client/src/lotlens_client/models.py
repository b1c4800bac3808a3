"""What goes into and comes out of the LotLens API, as frozen dataclasses.

`Lot` is the input; every other class is built from the contract's JSON with `from_json`, which
tolerates fields an older gateway leaves out and ignores fields a newer one adds. Timestamps are
timezone-aware `datetime`s (UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

JobState = Literal["pending", "processing", "translating", "completed", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

Json = Mapping[str, Any]


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (`Z` or an offset) as a datetime; None for null or garbage."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def _int(value: Any) -> int:
    if isinstance(value, float) and not math.isfinite(value):  # JSON's 1e999, Infinity, NaN
        raise ValueError(f"a count must be a finite number, not {value}")
    return int(value) if isinstance(value, int | float) else 0


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Lot:
    """One car to describe: its id, the auction's notes, its photos and (batch mode) a webhook."""

    lot_id: str
    additional_info: str = ""
    image_urls: tuple[str, ...] = ()
    webhook: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> Lot:
        """A lot in the contract's shape (`images: [{url}]`) or the v2.0 client's (`image_urls`)."""
        if "images" in data:
            urls = tuple(str(image["url"]) for image in data["images"] or ())
        else:
            urls = _strings(data.get("image_urls"))
        webhook = data.get("webhook")
        return cls(lot_id=str(data["lot_id"]), additional_info=str(data.get("additional_info") or ""),
                   image_urls=urls, webhook=str(webhook) if webhook else None)

    def to_json(self) -> dict[str, Any]:
        """The lot as the API expects it."""
        body: dict[str, Any] = {"lot_id": self.lot_id, "additional_info": self.additional_info,
                                "images": [{"url": url} for url in self.image_urls]}
        if self.webhook:
            body["webhook"] = self.webhook
        return body


@dataclass(frozen=True)
class JobAccepted:
    """201 of a batch submission: the job exists and will be processed."""

    job_id: str
    status: str
    created_at: datetime | None
    total_lots: int
    languages: tuple[str, ...]
    estimated_completion: datetime | None
    processing_mode: str
    webhook_configured: bool
    # Set for a job made by `retry_failed`: the job whose failed lots it resubmits.
    retry_of: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> JobAccepted:
        """Parse the 201 body."""
        return cls(job_id=str(data["job_id"]), status=str(data.get("status", "accepted")),
                   created_at=parse_time(data.get("created_at")), total_lots=_int(data.get("total_lots")),
                   languages=_strings(data.get("languages")),
                   estimated_completion=parse_time(data.get("estimated_completion")),
                   processing_mode=str(data.get("processing_mode", "batch")),
                   webhook_configured=bool(data.get("webhook_configured", False)),
                   retry_of=_text(data.get("retry_of")))


@dataclass(frozen=True)
class Progress:
    """How far a job is."""

    total_lots: int = 0
    processed_lots: int = 0
    failed_lots: int = 0
    completion_percentage: float = 0.0
    estimated_completion: datetime | None = None

    @classmethod
    def from_json(cls, data: Any) -> Progress:
        """Parse a `progress` block (missing counts are 0)."""
        if not isinstance(data, Mapping):
            return cls()
        percentage = data.get("completion_percentage")
        return cls(total_lots=_int(data.get("total_lots")), processed_lots=_int(data.get("processed_lots")),
                   failed_lots=_int(data.get("failed_lots")),
                   completion_percentage=float(percentage) if isinstance(percentage, int | float) else 0.0,
                   estimated_completion=parse_time(data.get("estimated_completion")))


@dataclass(frozen=True)
class ProcessingDetails:
    """The job's OpenAI batches (newest in the singular fields) and its stage."""

    current_stage: str | None = None
    openai_vision_batch_id: str | None = None
    openai_translation_batch_id: str | None = None
    vision_batch_ids: tuple[str, ...] = ()
    translation_batch_ids: tuple[str, ...] = ()
    usage: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> ProcessingDetails:
        """Parse a `processing_details` block."""
        if not isinstance(data, Mapping):
            return cls()
        return cls(current_stage=_text(data.get("current_stage")),
                   openai_vision_batch_id=_text(data.get("openai_vision_batch_id")),
                   openai_translation_batch_id=_text(data.get("openai_translation_batch_id")),
                   vision_batch_ids=_strings(data.get("vision_batch_ids")),
                   translation_batch_ids=_strings(data.get("translation_batch_ids")),
                   usage=_mapping(data.get("usage")))


@dataclass(frozen=True)
class JobStatus:
    """`GET /api/v1/batch-status/{job_id}`."""

    job_id: str
    status: str
    progress: Progress
    languages: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    processing_details: ProcessingDetails = field(default_factory=ProcessingDetails)
    error_message: str | None = None
    webhook_configured: bool = False
    # The job this one retries the failed lots of, and the job retrying this one's.
    retry_of: str | None = None
    retried_as: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Completed, failed or cancelled: the job will not change any more."""
        return self.status in TERMINAL_STATES

    @classmethod
    def from_json(cls, data: Json) -> JobStatus:
        """Parse the status body."""
        return cls(job_id=str(data["job_id"]), status=str(data["status"]),
                   progress=Progress.from_json(data.get("progress")),
                   languages=_strings(data.get("languages")),
                   created_at=parse_time(data.get("created_at")),
                   updated_at=parse_time(data.get("updated_at")),
                   completed_at=parse_time(data.get("completed_at")),
                   cancelled_at=parse_time(data.get("cancelled_at")),
                   processing_details=ProcessingDetails.from_json(data.get("processing_details")),
                   error_message=_text(data.get("error_message")),
                   webhook_configured=bool(data.get("webhook_configured", False)),
                   retry_of=_text(data.get("retry_of")), retried_as=_text(data.get("retried_as")))


@dataclass(frozen=True)
class Description:
    """A lot's damage description in one language: HTML made of `<p>` paragraphs."""

    language: str
    damages: str

    @classmethod
    def from_json(cls, data: Json) -> Description:
        """Parse one `descriptions` entry."""
        return cls(language=str(data["language"]), damages=str(data["damages"]))


@dataclass(frozen=True)
class LotResult:
    """A described (or failed) lot."""

    lot_id: str
    status: str
    descriptions: tuple[Description, ...] = ()
    processed_images: int = 0
    missing_images: tuple[str, ...] = ()
    processed_at: datetime | None = None
    error_message: str | None = None
    # Tokens by kind and `estimated_cost_usd` of the lot's model answers, when the service reports them.
    usage: Mapping[str, Any] | None = None
    # A failed lot's `descriptions` stay empty: what its failed translation kept, and what it lacks.
    missing_languages: tuple[str, ...] = ()
    partial_descriptions: tuple[Description, ...] = ()

    def description(self, language: str) -> str | None:
        """The HTML description in `language`, or None when there is none."""
        return next((d.damages for d in self.descriptions if d.language == language), None)

    @classmethod
    def from_json(cls, data: Json, processed_at: datetime | None = None) -> LotResult:
        """Parse one lot of a result (`processed_at` fills in a lot that has none of its own)."""
        return cls(lot_id=str(data["lot_id"]), status=str(data["status"]),
                   descriptions=tuple(Description.from_json(d) for d in data.get("descriptions") or ()),
                   processed_images=_int(data.get("processed_images")),
                   missing_images=_strings(data.get("missing_images")),
                   processed_at=parse_time(data.get("processed_at")) or processed_at,
                   error_message=_text(data.get("error_message")), usage=_mapping(data.get("usage")),
                   missing_languages=_strings(data.get("missing_languages")), partial_descriptions=tuple(
                       map(Description.from_json, data.get("partial_descriptions") or ())))


@dataclass(frozen=True)
class ProcessingSummary:
    """Totals of a finished job."""

    total_lots: int = 0
    processed_lots: int = 0
    failed_lots: int = 0
    total_images_processed: int = 0
    total_processing_time: str | None = None
    # The job's tokens and estimated cost, in all and `by_model` (once the job is finished).
    usage: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> ProcessingSummary:
        """Parse a `processing_summary` block."""
        if not isinstance(data, Mapping):
            return cls()
        return cls(total_lots=_int(data.get("total_lots")), processed_lots=_int(data.get("processed_lots")),
                   failed_lots=_int(data.get("failed_lots")),
                   total_images_processed=_int(data.get("total_images_processed")),
                   total_processing_time=_text(data.get("total_processing_time")),
                   usage=_mapping(data.get("usage")))


@dataclass(frozen=True)
class JobResults:
    """`GET /api/v1/batch-results/{job_id}` of a finished job: every lot in request order."""

    job_id: str
    status: str
    lots: tuple[LotResult, ...]
    processing_summary: ProcessingSummary
    version: str | None = None
    completed_at: datetime | None = None
    error_message: str | None = None

    def lot(self, lot_id: str) -> LotResult | None:
        """The result of one lot, or None when the job has no such lot."""
        return next((lot for lot in self.lots if lot.lot_id == lot_id), None)

    @classmethod
    def from_json(cls, data: Json) -> JobResults:
        """Parse the results document."""
        results = data.get("results")
        block: Json = results if isinstance(results, Mapping) else {}
        return cls(job_id=str(data["job_id"]), status=str(data["status"]),
                   lots=tuple(LotResult.from_json(lot) for lot in block.get("lots") or ()),
                   processing_summary=ProcessingSummary.from_json(data.get("processing_summary")),
                   version=_text(block.get("version")), completed_at=parse_time(data.get("completed_at")),
                   error_message=_text(data.get("error_message")))


@dataclass(frozen=True)
class SyncResult:
    """200 of a one-lot submission: the lot, described now."""

    lot: LotResult
    version: str | None = None
    processed_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Json) -> SyncResult:
        """Parse the synchronous body (its single lot)."""
        processed_at = parse_time(data.get("processed_at"))
        lots = data.get("lots")
        if not isinstance(lots, list) or len(lots) != 1:
            raise ValueError("a synchronous answer has exactly one lot")
        return cls(lot=LotResult.from_json(lots[0], processed_at), version=_text(data.get("version")),
                   processed_at=processed_at)


@dataclass(frozen=True)
class JobSummary:
    """One job of a listing."""

    job_id: str
    status: str
    progress: Progress
    languages: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    webhook_configured: bool = False
    error_message: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> JobSummary:
        """Parse a `jobs` entry (the v2.0 document names the id `id`)."""
        progress = dict(data.get("progress") or {})
        for count in ("total_lots", "processed_lots", "failed_lots"):
            progress.setdefault(count, data.get(count))
        return cls(job_id=str(data.get("job_id") or data["id"]), status=str(data["status"]),
                   progress=Progress.from_json(progress), languages=_strings(data.get("languages")),
                   created_at=parse_time(data.get("created_at")),
                   updated_at=parse_time(data.get("updated_at")),
                   webhook_configured=bool(data.get("webhook_configured", False)),
                   error_message=_text(data.get("error_message")))


@dataclass(frozen=True)
class Pagination:
    """Where a page of jobs is."""

    limit: int
    offset: int
    total: int
    has_more: bool

    @classmethod
    def from_json(cls, data: Json) -> Pagination:
        """Parse a `pagination` block."""
        return cls(limit=_int(data.get("limit")), offset=_int(data.get("offset")),
                   total=_int(data.get("total")), has_more=bool(data.get("has_more")))


@dataclass(frozen=True)
class JobPagination(Pagination):
    """Where a page of jobs is; the next page starts right after it at `next_cursor` (None on the
    last page, and from a server that does not send it)."""

    next_cursor: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> JobPagination:
        """Parse a job listing's `pagination` block."""
        base, cursor = Pagination.from_json(data), data.get("next_cursor")
        return cls(limit=base.limit, offset=base.offset, total=base.total, has_more=base.has_more,
                   next_cursor=cursor if isinstance(cursor, str) else None)


@dataclass(frozen=True)
class JobPage:
    """`GET /api/v1/batch-jobs`: one page of the client's jobs, newest first."""

    jobs: tuple[JobSummary, ...]
    pagination: JobPagination

    @classmethod
    def from_json(cls, data: Json) -> JobPage:
        """Parse the listing body."""
        return cls(jobs=tuple(JobSummary.from_json(job) for job in data["jobs"]),
                   pagination=JobPagination.from_json(data["pagination"]))


@dataclass(frozen=True)
class Cancellation:
    """200 of a cancel: the cancellation is recorded and the work is being stopped."""

    job_id: str
    status: str
    cancelled_at: datetime | None
    message: str

    @classmethod
    def from_json(cls, data: Json) -> Cancellation:
        """Parse the cancel body."""
        return cls(job_id=str(data["job_id"]), status=str(data["status"]),
                   cancelled_at=parse_time(data.get("cancelled_at")), message=str(data.get("message", "")))


def lots_from(lots: Sequence[Lot | Json]) -> list[Lot]:
    """Lots given as `Lot`s or as JSON objects in either accepted shape."""
    return [lot if isinstance(lot, Lot) else Lot.from_json(lot) for lot in lots]
