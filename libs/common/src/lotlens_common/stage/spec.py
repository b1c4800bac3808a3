"""What differs between the vision and translation stages, behind one small interface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from lotlens_common.events import Event


@dataclass(frozen=True)
class LotWork:
    """A lot waiting in (or claimed by) a stage, with the inputs its request needs."""

    job_id: str
    lot_id: str
    client_id: str
    total_lots: int
    attempts: int
    work: dict[str, Any]

    def with_work(self, **changes: Any) -> LotWork:
        """A copy with some work fields replaced (e.g. after the image check)."""
        return replace(self, work={**self.work, **changes})


@dataclass(frozen=True)
class Prepared:
    """The result of preparing claimed lots: requests to send, and lots settled without a call."""

    requests: list[tuple[LotWork, dict[str, Any]]]
    settled: list[tuple[LotWork, Event]]


class StageSpec(Protocol):
    """The stage-specific parts: requests, results and the events that carry them."""

    @property
    def name(self) -> str:
        """The stage's name ("vision" or "translation"), also its rows' key in the work tables."""
        ...

    def output_topic(self) -> str:
        """Where this stage's events go."""
        ...

    def model(self) -> str:
        """The model every request of the stage uses (one model per batch file)."""
        ...

    def estimate_tokens(self, lot: LotWork) -> int:
        """Tokens a lot's request is expected to enqueue (for the enqueued-token budget)."""
        ...

    async def prepare(self, lots: list[LotWork]) -> Prepared:
        """Request bodies for the lots that need the model; events for those that do not."""
        ...

    def result_event(self, lot: LotWork, body: Mapping[str, Any]) -> Event:
        """The event for a successful response body (raises ModelOutputError when unusable)."""
        ...

    def failure_event(self, lot: LotWork, reason: str) -> Event:
        """The event for a lot given up on."""
        ...

    def batch_submitted_event(self, job_id: str, shard_id: str, attempt: int, batch_id: str,
                              lot_ids: tuple[str, ...]) -> Event:
        """The event that puts a created batch on record."""
        ...
