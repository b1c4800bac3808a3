"""Pydantic models of the webhook delivery bodies (documentation: the routes build plain dicts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from lotlens_gateway.schemas import JOB_ID
from lotlens_gateway.schemas_jobs import Pagination


class Attempt(BaseModel):
    """One attempt to deliver a webhook."""

    attempt: int = Field(examples=[1])
    attempted_at: str
    succeeded: bool
    status_code: int | None = Field(description="The endpoint's HTTP status (none on a network error)")
    latency_ms: float | None
    error: str | None


class Delivery(BaseModel):
    """One webhook delivery: a URL (and payload part) of the job, with its attempts."""

    id: str = Field(description="Also the `webhook-id` header, stable across the delivery's retries")
    webhook_url: str
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    created_at: str | None
    last_attempt_at: str | None
    delivered_at: str | None
    next_attempt_at: str | None
    error_message: str | None
    last_status_code: int | None
    attempts: list[Attempt]


class DeliveryList(BaseModel):
    """One page of a job's deliveries, oldest first."""

    job_id: str = Field(examples=[JOB_ID])
    pagination: Pagination
    deliveries: list[Delivery]


class RedeliveryAccepted(BaseModel):
    """A redelivery was requested; the deliveries appear in the list as they are attempted."""

    job_id: str = Field(examples=[JOB_ID])
    redelivery_id: str
    status: Literal["scheduled"]
    requested_at: str
