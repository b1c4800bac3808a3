"""Fault injection and counters, driven by the `/_standin/` control API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lotlens_openai_standin.answer_rules import LanguageFaultKind
from lotlens_openai_standin.api_errors import bad_request

# How the batch ends; `stuck_finalizing` never does: it stays `finalizing` and refuses cancels
# (409), as OpenAI's batches did in some incidents.
BatchOutcome = Literal["failed", "expired", "cancelled", "stuck_finalizing"]
FaultKind = Literal["rate_limit", "server_error", "overloaded", "timeout", "insufficient_quota",
                    "invalid_api_key", "not_found"]
FaultScope = Literal["files", "batches", "responses", "chat", "any"]


class ApiFault(BaseModel):
    """The next `count` requests in `scope` (of `method`, if given) get this failure instead of
    their answer."""

    model_config = ConfigDict(extra="forbid")

    scope: FaultScope
    kind: FaultKind
    count: int = Field(default=1, ge=1)
    # E.g. POST: OpenAI refuses a create for the quota while it still answers the listings.
    method: Literal["GET", "POST", "DELETE"] | None = None
    # A timeout holds the request this long, then answers 504 (the client has usually given up).
    seconds: float = Field(default=30.0, ge=0)


def scope_of(path: str) -> FaultScope | None:
    """The fault scope of an API path."""
    for prefix, scope in (("/v1/files", "files"), ("/v1/batches", "batches"), ("/v1/responses", "responses"),
                          ("/v1/chat/completions", "chat")):
        if path.startswith(prefix):
            return scope  # type: ignore[return-value]
    return None


@dataclass
class Faults:
    """What goes wrong next; batches read it once, when they are created."""

    batch_outcome: BatchOutcome | None = None
    # None: every new batch gets `batch_outcome`; N: only the next N batches do.
    batch_outcome_count: int | None = None
    rate_limit_next: int = 0
    server_error_next: int = 0
    fail_custom_ids_containing: str | None = None
    # Retry-After of successive 429s, cycled (OpenAI's varies with the limit's reset time).
    retry_after_s: list[float] = field(default_factory=lambda: [1.0])
    rate_limits_sent: int = 0
    api_faults: list[dict[str, Any]] = field(default_factory=list)
    # A translation answer leaves this language's text as the English source, copied (a model's
    # real failure with many languages in one structured answer); None: the next answers all do,
    # N: only the next N translation answers (a batch's lines, each, and direct calls).
    untranslated_language: str | None = None
    untranslated_count: int | None = None
    # A translation answer writes this Chinese language in the other system's forms (`zh-TW` in
    # Simplified characters, `zh` in Traditional ones), a model's slip between the two; counted
    # as `untranslated_count` is.
    other_variant_language: str | None = None
    other_variant_count: int | None = None
    # The next N reads of a `completed` batch show no `output_file_id` yet, and the next N reads of
    # a file's content answer 404: OpenAI has shown a batch `completed` whose output was not there
    # yet for a moment (BerriAI/litellm#37713).
    output_lag_reads: int = 0
    content_not_found_next: int = 0

    def take_language_faults(self) -> dict[str, LanguageFaultKind]:
        """language → how a translation answered now gets it wrong, consuming one of each counted
        fault (one language with both is left untranslated)."""
        faults: dict[str, LanguageFaultKind] = {}
        if self.other_variant_language is not None:
            faults[self.other_variant_language] = "other_variant"
            if self.other_variant_count is not None:
                self.other_variant_count -= 1
                if self.other_variant_count <= 0:
                    self.other_variant_language, self.other_variant_count = None, None
        if self.untranslated_language is not None:
            faults[self.untranslated_language] = "untranslated"
            if self.untranslated_count is not None:
                self.untranslated_count -= 1
                if self.untranslated_count <= 0:
                    self.untranslated_language, self.untranslated_count = None, None
        return faults

    def take_batch_outcome(self) -> BatchOutcome | None:
        """The outcome for a batch being created now, consuming one of a counted fault."""
        outcome = self.batch_outcome
        if outcome is not None and self.batch_outcome_count is not None:
            self.batch_outcome_count -= 1
            if self.batch_outcome_count <= 0:
                self.batch_outcome, self.batch_outcome_count = None, None
        return outcome

    def take_fault(self, path: str, method: str = "GET") -> ApiFault | None:
        """The failure for a `method` request to `path` arriving now, consuming it (None: answer
        normally)."""
        scope = scope_of(path)
        if scope is None:
            return None
        if scope in ("responses", "chat") and self.rate_limit_next > 0:
            # The original shorthand: the next N model calls are rate limited / fail.
            self.rate_limit_next -= 1
            return ApiFault(scope=scope, kind="rate_limit")
        if scope in ("responses", "chat") and self.server_error_next > 0:
            self.server_error_next -= 1
            return ApiFault(scope=scope, kind="server_error")
        if scope == "files" and path.endswith("/content") and self.content_not_found_next > 0:
            self.content_not_found_next -= 1
            return ApiFault(scope=scope, kind="not_found")
        for entry in self.api_faults:
            fault = ApiFault.model_validate(entry)
            if fault.scope in (scope, "any") and fault.method in (None, method):
                entry["count"] -= 1
                self.api_faults = [e for e in self.api_faults if e["count"] > 0]
                return fault
        return None

    def take_output_lag(self) -> bool:
        """Whether a read of a completed batch arriving now hides its output file, consuming one."""
        if self.output_lag_reads <= 0:
            return False
        self.output_lag_reads -= 1
        return True

    def next_retry_after(self) -> float:
        """The Retry-After of the next 429, cycling through `retry_after_s`."""
        value = self.retry_after_s[self.rate_limits_sent % len(self.retry_after_s)]
        self.rate_limits_sent += 1
        return value

    def reset(self) -> None:
        """No faults at all."""
        vars(self).update(vars(Faults()))

    def as_dict(self) -> dict[str, Any]:
        """The current faults, for the control API."""
        return {"batch_outcome": self.batch_outcome, "batch_outcome_count": self.batch_outcome_count,
                "rate_limit_next": self.rate_limit_next, "server_error_next": self.server_error_next,
                "fail_custom_ids_containing": self.fail_custom_ids_containing,
                "retry_after_s": list(self.retry_after_s), "rate_limits_sent": self.rate_limits_sent,
                "api_faults": [dict(e) for e in self.api_faults],
                "untranslated_language": self.untranslated_language,
                "untranslated_count": self.untranslated_count,
                "other_variant_language": self.other_variant_language,
                "other_variant_count": self.other_variant_count,
                "output_lag_reads": self.output_lag_reads,
                "content_not_found_next": self.content_not_found_next}


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
    retry_after_s: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    api_faults: list[ApiFault] = Field(default_factory=list)
    untranslated_language: str | None = None
    untranslated_count: int | None = Field(default=None, ge=1)
    other_variant_language: str | None = None
    other_variant_count: int | None = Field(default=None, ge=1)
    output_lag_reads: int = Field(default=0, ge=0)
    content_not_found_next: int = Field(default=0, ge=0)


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
        if "api_faults" in update.model_fields_set:
            faults.api_faults = [fault.model_dump() for fault in update.api_faults]
        sent = update.model_fields_set
        if "batch_outcome" in sent and "batch_outcome_count" not in sent:
            faults.batch_outcome_count = None
        if "untranslated_language" in sent and "untranslated_count" not in sent:
            faults.untranslated_count = None
        if "other_variant_language" in sent and "other_variant_count" not in sent:
            faults.other_variant_count = None
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
