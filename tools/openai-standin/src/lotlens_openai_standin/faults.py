"""Fault injection and counters, driven by the `/_standin/` control API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lotlens_openai_standin.api_errors import bad_request

BatchOutcome = Literal["failed", "expired", "cancelled"]
DirectFault = Literal["rate_limit", "server_error"]


@dataclass
class Faults:
    """What goes wrong next; batches read it once, when they are created."""

    batch_outcome: BatchOutcome | None = None
    # None: every new batch gets `batch_outcome`; N: only the next N batches do.
    batch_outcome_count: int | None = None
    rate_limit_next: int = 0
    server_error_next: int = 0
    fail_custom_ids_containing: str | None = None

    def take_batch_outcome(self) -> BatchOutcome | None:
        """The outcome for a batch being created now, consuming one of a counted fault."""
        outcome = self.batch_outcome
        if outcome is not None and self.batch_outcome_count is not None:
            self.batch_outcome_count -= 1
            if self.batch_outcome_count <= 0:
                self.batch_outcome, self.batch_outcome_count = None, None
        return outcome

    def take_direct_fault(self) -> DirectFault | None:
        """The fault for a direct call happening now, if any (rate limits first)."""
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            return "rate_limit"
        if self.server_error_next > 0:
            self.server_error_next -= 1
            return "server_error"
        return None

    def reset(self) -> None:
        """No faults at all."""
        vars(self).update(vars(Faults()))

    def as_dict(self) -> dict[str, Any]:
        """The current faults, for the control API."""
        return {"batch_outcome": self.batch_outcome, "batch_outcome_count": self.batch_outcome_count,
                "rate_limit_next": self.rate_limit_next, "server_error_next": self.server_error_next,
                "fail_custom_ids_containing": self.fail_custom_ids_containing}


@dataclass
class Stats:
    """What the stand-in has been asked to do since it started or was last reset."""

    files_uploaded: int = 0
    batches_created: int = 0
    batch_metadata: list[dict[str, str]] = field(default_factory=list)
    direct_calls: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Zero every counter."""
        vars(self).update(vars(Stats()))

    def as_dict(self) -> dict[str, Any]:
        """The counters, for the control API."""
        return {"files_uploaded": self.files_uploaded, "batches_created": self.batches_created,
                "batch_metadata": list(self.batch_metadata), "direct_calls": dict(self.direct_calls)}


class FaultsUpdate(BaseModel):
    """The body of `POST /_standin/faults`: only the keys sent are changed."""

    model_config = ConfigDict(extra="forbid")

    batch_outcome: BatchOutcome | None = None
    batch_outcome_count: int | None = Field(default=None, ge=1)
    rate_limit_next: int = Field(default=0, ge=0)
    server_error_next: int = Field(default=0, ge=0)
    fail_custom_ids_containing: str | None = None


def control_router(faults: Faults, stats: Stats) -> APIRouter:
    """The `/_standin/` routes: set faults, read counters, reset both."""
    router = APIRouter(prefix="/_standin")

    @router.post("/faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        try:
            update = FaultsUpdate.model_validate_json(await request.body())
        except ValidationError as exc:
            raise bad_request(f"Invalid faults: {exc.errors()[0]['msg']}") from None
        for name in update.model_fields_set:
            setattr(faults, name, getattr(update, name))
        sent = update.model_fields_set
        if "batch_outcome" in sent and "batch_outcome_count" not in sent:
            faults.batch_outcome_count = None
        return faults.as_dict()

    @router.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return faults.as_dict()

    @router.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return stats.as_dict()

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        faults.reset()
        stats.reset()
        return {"faults": faults.as_dict(), "stats": stats.as_dict()}

    return router
