"""Events in: submitted lots join the stage's queue; cancellations stop a job's work."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from lotlens_common import tracing
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.postgres_arrivals import Arrival, enqueue_arrivals
from lotlens_common.stage.work import arriving_vision_work

STAGE = "vision"
# What `handle` acts on; the consumer passes over the rest unread.
HANDLED = frozenset(kind.event_type for kind in (LotSubmitted, JobCancelled))


def handle(engine: Engine, _producer: EventProducer | None, envelopes: Sequence[Envelope]) -> None:
    """Apply a consumer batch in one transaction (idempotent: known lots are left alone)."""
    with engine.begin() as conn:
        arrivals: list[Arrival] = []
        for envelope in envelopes:
            event = envelope.event
            if isinstance(event, LotSubmitted):
                arrivals.append(Arrival(event.job_id, event.lot_id, envelope.client_id, event.total_lots,
                                        arriving_vision_work(event.additional_info, event.image_urls,
                                                             event.languages,
                                                             tracing.job_carrier(event.job_id))))
            elif isinstance(event, JobCancelled):
                enqueue_arrivals(conn, STAGE, arrivals)
                arrivals = []
                store.cancel_job(conn, STAGE, event.job_id)
        enqueue_arrivals(conn, STAGE, arrivals)  # a cancelled job's lots arrive cancelled
