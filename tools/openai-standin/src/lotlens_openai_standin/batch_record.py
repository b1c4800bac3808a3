"""The batch object: its state, its JSON shape, and the checks on `POST /v1/batches`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lotlens_openai_standin.answers import ENDPOINTS
from lotlens_openai_standin.api_errors import bad_request
from lotlens_openai_standin.batch_run import RunState
from lotlens_openai_standin.faults import BatchOutcome

ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
# The properties of the OpenAI description's `CreateBatchRequest` (`output_expires_after` is
# taken and ignored: the stand-in's files do not expire).
CREATE_PARAMETERS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata",
                               "output_expires_after"})
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


@dataclass
class BatchRecord:
    """One batch, mutated only on the event loop."""

    id: str
    endpoint: str
    input_file_id: str
    created_at: int
    sequence: int
    metadata: dict[str, str] | None
    outcome: BatchOutcome | None
    fail_custom_ids_containing: str | None
    status: str = "validating"
    model: str | None = None
    # None: not estimated (validated without an enqueued-token limit, the estimate's only reader).
    estimated_tokens: int | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    # Set when the batch starts running: how far it got (lines, bytes, counts, tokens).
    run: RunState | None = None
    # Requests an expiry left unexecuted: OpenAI counts them as failed.
    expired_unexecuted: int = 0
    timestamps: dict[str, int] = field(default_factory=dict)
    # When the current status began, to the sub-second: phases resume from it after a restart.
    phase_started: float = field(default_factory=time.time)
    # The end of the completion window (sub-second, so tests can shorten the window).
    window_ends: float = 0.0
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)

    def move_to(self, status: str, at: int) -> None:
        """Change status and stamp its `*_at` field."""
        self.status = status
        self.phase_started = time.time()
        stamp = {"in_progress": "in_progress_at", "finalizing": "finalizing_at", "completed": "completed_at",
                 "failed": "failed_at", "expired": "expired_at", "cancelling": "cancelling_at",
                 "cancelled": "cancelled_at"}[status]
        self.timestamps[stamp] = at

    def to_state(self) -> dict[str, Any]:
        """Everything but the in-process cancel signal, as kept in the state directory."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cancel_requested"}
        return state | {"run": asdict(self.run) if self.run else None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BatchRecord:
        """A batch read back from the state directory; a pending cancel is still pending."""
        if state.get("estimated_tokens") == 0:
            # Saved by 2ed4da3d..fa3c1eaa, which kept 0 for a batch validated without an enqueued-token
            # limit: not estimated, so a start with a limit estimates it (`BatchService`). No estimate
            # made is 0: a line's body, its model at least, counts a token.
            state = state | {"estimated_tokens": None}
        batch = cls(**(state | {"run": RunState(**state["run"]) if state["run"] else None}))
        if batch.status == "cancelling":
            batch.cancel_requested.set()
        return batch

    def request_counts(self) -> dict[str, int]:
        """Lines in the file, lines answered so far (200 or not), expired lines counted as failed."""
        completed = self.run.completed if self.run else 0
        failed = (self.run.failed if self.run else 0) + self.expired_unexecuted
        return {"total": self.total, "completed": completed, "failed": failed}

    def usage(self) -> dict[str, Any] | None:
        """Token totals of the answered requests."""
        if self.run is None:
            return None
        input_tokens, output_tokens, reasoning_tokens = self.run.tokens
        return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                "total_tokens": input_tokens + output_tokens}

    def to_object(self) -> dict[str, Any]:
        """The Batch object OpenAI returns."""
        stamp = self.timestamps.get
        # OpenAI shows the result files only once the batch has reached a terminal status.
        files_ready = self.status in ("completed", "expired", "cancelled", "failed")
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": "24h", "status": self.status,
            "output_file_id": self.output_file_id if files_ready else None,
            "error_file_id": self.error_file_id if files_ready else None,
            "created_at": self.created_at, "in_progress_at": stamp("in_progress_at"),
            "expires_at": int(self.window_ends),
            "finalizing_at": stamp("finalizing_at"), "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"), "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"), "cancelled_at": stamp("cancelled_at"),
            "request_counts": self.request_counts(), "usage": self.usage(), "metadata": self.metadata,
        }


def check_metadata(metadata: object) -> dict[str, str] | None:
    """OpenAI's metadata rules: at most 16 string pairs, keys ≤ 64 chars, values ≤ 512 chars."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise bad_request("Invalid type for 'metadata': expected an object.", param="metadata",
                          code="invalid_type")
    if len(metadata) > MAX_METADATA_KEYS:
        raise bad_request(f"Invalid 'metadata': too many properties. Expected an object with at most "
                          f"{MAX_METADATA_KEYS} properties, but got an object with {len(metadata)} "
                          "properties instead.", param="metadata", code="object_above_max_size")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise bad_request(f"Invalid 'metadata': string too long. Expected a string with maximum length "
                              f"{MAX_METADATA_KEY_CHARS}, but got a string with length {len(key)} instead.",
                              param="metadata", code="string_above_max_length")
        if not isinstance(value, str):
            raise bad_request(f"Invalid type for 'metadata.{key}': expected a string.",
                              param=f"metadata.{key}", code="invalid_type")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise bad_request(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                              f"length {MAX_METADATA_VALUE_CHARS}, but got a string with length {len(value)} "
                              "instead.", param=f"metadata.{key}", code="string_above_max_length")
    return dict(metadata)


def check_create_params(payload: Mapping[str, Any]) -> tuple[str, str, dict[str, str] | None]:
    """(input_file_id, endpoint, metadata) from a create request, or OpenAI's 400 (an unknown
    parameter too, as Responses and Chat Completions refuse one: a misspelt field passed here)."""
    for name in payload:
        if name not in CREATE_PARAMETERS:
            raise bad_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if payload.get(name) is None:
            raise bad_request(f"Missing required parameter: '{name}'.", param=name,
                              code="missing_required_parameter")
    endpoint = payload["endpoint"]
    if endpoint not in ENDPOINTS:
        allowed = ", ".join(f"'{e}'" for e in ENDPOINTS)
        raise bad_request(f"Invalid value: '{endpoint}'. Supported values are: {allowed}.", param="endpoint",
                          code="invalid_value")
    if payload["completion_window"] != "24h":
        raise bad_request(f"Invalid value: '{payload['completion_window']}'. Supported values are: '24h'.",
                          param="completion_window", code="invalid_value")
    return str(payload["input_file_id"]), str(endpoint), check_metadata(payload.get("metadata"))
