"""Events in: submitted lots join the stage's queue; cancellations stop a job's work."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from lotlens_common import tracing
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters import postgres_arrivals
from lotlens_common.stage.work import LotWork, VisionWork

STAGE = "vision"
# What `handle` acts on; the consumer passes over the rest unread.
HANDLED = frozenset(kind.event_type for kind in (LotSubmitted, JobCancelled))


def handle(engine: Engine, _producer: EventProducer | None, envelopes: Sequence[Envelope]) -> None:
    """Apply a consumer batch in one transaction (idempotent: known lots are left alone)."""
    with engine.begin() as conn:
        arrivals: list[LotWork[VisionWork]] = []
        for envelope in envelopes:
            event = envelope.event
            if isinstance(event, LotSubmitted):
                arrivals.append(LotWork(
                    job_id=event.job_id, lot_id=event.lot_id, client_id=envelope.client_id,
                    total_lots=event.total_lots, attempts=0,
                    work=VisionWork(additional_info=event.additional_info,
                                    image_urls=event.image_urls, languages=event.languages,
                                    trace=tracing.job_carrier(event.job_id))))
            elif isinstance(event, JobCancelled):
                postgres_arrivals.enqueue(conn, STAGE, arrivals)
                arrivals = []
                store.cancel_job(conn, STAGE, event.job_id)
        postgres_arrivals.enqueue(conn, STAGE, arrivals)  # a cancelled job's lots arrive cancelled
