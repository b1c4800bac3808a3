"""The event catalogue: frozen, versioned, past-tense facts that flow between the services.

Every event names its job; the envelope (see `envelope.py`) adds the event id, type, version,
time, client id and trace context. Message keys are job ids, so one job's events stay in order
within a topic. When a payload changes shape, bump `version` and add an upcaster in
`envelope.py` so old messages still read. Adding an optional field is not a change of shape: an
older release reading the event (a rolling update, a `rollout undo`) ignores it (`decode`), so a
field it may not ignore (one that changes what the others mean) needs a new version instead,
and so does renaming or removing a field: read by an older release, the old name took its
default (`event_schemas.removed` fails `make test` on a public event's).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from lotlens_common.model.usage import JobUsage, Usage

JobStatus = Literal["pending", "processing", "translating", "completed", "failed", "cancelled"]
TERMINAL_JOB_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Stage = Literal["intake", "vision", "translation"]


class Event(BaseModel):
    """Base of every event: immutable, strict about unknown fields where code builds one (the
    Kafka edge, `decode`, drops the fields a newer release added before validating)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    version: ClassVar[int] = 1

    job_id: str


class JobSubmitted(Event):
    """A client's batch request was accepted (the gateway answered 201)."""

    event_type: ClassVar[str] = "JobSubmitted"

    client_id: str
    api_version: str
    languages: tuple[str, ...]
    total_lots: int
    webhook_urls: tuple[str, ...] = Field(description=(
        "The job's distinct webhook URLs, in first-seen order: all of them when `webhook_urls_total` "
        "is null, else the first ones (up to about 1 MB of URLs; the event must fit one message)"))
    created_at: datetime
    estimated_completion: datetime
    retry_of: str | None = Field(default=None, description=(
        "The finished job whose failed lots this job resubmits (`POST .../retry-failed`)"))
    webhook_urls_total: int | None = Field(default=None, description=(
        "How many distinct webhook URLs the job has, when `webhook_urls` lists only the first ones"))


class LotSubmitted(Event):
    """One lot of a submitted job, with everything the stages need to work on it alone."""

    event_type: ClassVar[str] = "LotSubmitted"

    lot_id: str
    seq: int = Field(description="0-based position of the lot in the request")
    total_lots: int
    additional_info: str
    image_urls: tuple[str, ...]
    languages: tuple[str, ...]
    webhook: str | None = None


class VisionBatchSubmitted(Event):
    """An OpenAI batch was created for a shard of a job's lots (the batch id is now on record)."""

    event_type: ClassVar[str] = "VisionBatchSubmitted"

    shard_id: str
    attempt: int
    batch_id: str
    lot_ids: tuple[str, ...]


class VisionCompleted(Event):
    """The vision model described a lot in English."""

    event_type: ClassVar[str] = "VisionCompleted"

    lot_id: str
    english_html: str
    languages: tuple[str, ...]
    total_lots: int
    processed_images: int
    missing_images: tuple[str, ...]
    usage: Usage | None = Field(default=None, description="Tokens and estimated cost of the vision answer")


class TranslationBatchSubmitted(Event):
    """An OpenAI batch was created to translate a shard of a job's lots."""

    event_type: ClassVar[str] = "TranslationBatchSubmitted"

    shard_id: str
    attempt: int
    batch_id: str
    lot_ids: tuple[str, ...]


class TranslationCompleted(Event):
    """A lot has its description in every requested language (English included)."""

    event_type: ClassVar[str] = "TranslationCompleted"

    lot_id: str
    descriptions: dict[str, str]
    usage: Usage | None = Field(default=None, description="Tokens and estimated cost of the translation")


# Text that ends in PostgreSQL (jsonb, text), which cannot hold U+0000: a model's refusal or an
# error message may carry one, and its event could then never be projected (dead-lettered, and its
# job never finished). Applied on decoding too, so events already recorded are read without it.
StorableText = Annotated[str, AfterValidator(lambda text: text.replace("\x00", ""))]


class LotFailed(Event):
    """A lot cannot be described; the reason is shown to the client."""

    event_type: ClassVar[str] = "LotFailed"

    lot_id: str
    stage: Stage
    reason: StorableText
    total_lots: int = 0
    processed_images: int = 0
    missing_images: tuple[str, ...] = ()
    usage: Usage | None = Field(default=None, description=(
        "Tokens and estimated cost of the failed stage's answers, billed though the lot failed: the "
        "languages translated before a part failed, answers that could not be used"))
    descriptions: dict[str, str] = Field(default_factory=dict, description=(
        "The partial texts the lot keeps though it failed, by requested language in the order asked: "
        "a lot failed at translation keeps its English (when asked for) and the languages translated "
        "before the failure, all paid for. Not every language (the requested languages missing here "
        "are those it failed in); the API lists them in `partial_descriptions`, its failed lot's "
        "`descriptions` staying empty. Empty when it has none (a lot failed at the vision stage)"))


class JobCancelled(Event):
    """The client cancelled the job: no more work is submitted for it."""

    event_type: ClassVar[str] = "JobCancelled"

    cancelled_at: datetime


class JobCompleted(Event):
    """A job reached a terminal state; the webhook dispatcher and downstream systems react."""

    event_type: ClassVar[str] = "JobCompleted"

    status: Literal["completed", "failed", "cancelled"]
    completed_at: datetime
    total_lots: int
    processed_lots: int
    failed_lots: int
    usage: JobUsage | None = Field(default=None, description="The job's tokens and estimated cost")


class WebhookAttempted(Event):
    """One delivery attempt was made (whatever its outcome)."""

    event_type: ClassVar[str] = "WebhookAttempted"

    delivery_id: str
    webhook_url: str
    attempt: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response_body: str | None = None
    next_attempt_at: datetime | None = None


class WebhookDelivered(Event):
    """The customer's endpoint accepted the delivery."""

    event_type: ClassVar[str] = "WebhookDelivered"

    delivery_id: str
    webhook_url: str
    attempts: int
    delivered_at: datetime


class WebhookFailed(Event):
    """Every attempt failed; the delivery is given up (a manual redelivery may follow)."""

    event_type: ClassVar[str] = "WebhookFailed"

    delivery_id: str
    webhook_url: str
    attempts: int
    failed_at: datetime
    error: str


class WebhookRedeliveryRequested(Event):
    """The client asked for a finished job's webhooks again (e.g. after fixing its endpoint)."""

    event_type: ClassVar[str] = "WebhookRedeliveryRequested"

    redelivery_id: str
    requested_at: datetime


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (JobSubmitted, LotSubmitted, VisionBatchSubmitted, VisionCompleted,
                TranslationBatchSubmitted, TranslationCompleted, LotFailed, JobCancelled,
                JobCompleted, WebhookAttempted, WebhookDelivered, WebhookFailed,
                WebhookRedeliveryRequested)
}
