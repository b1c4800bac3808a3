"""Events in: described lots join the translation queue, or pass straight through.

A lot whose job asked only for English needs no model call: its TranslationCompleted is
published at once. Lots that failed at the vision stage are counted as arrived, so the job's
last translation batch is sent as soon as every lot is accounted for.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from lotlens_common import tracing
from lotlens_common.envelope import Envelope, caused
from lotlens_common.events import JobCancelled, LotFailed, TranslationCompleted, VisionCompleted
from lotlens_common.model.translation import target_languages
from lotlens_common.producer import EventProducer
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.postgres_arrivals import Arrival, enqueue_arrivals
from lotlens_common.stage.work import TranslationWork, arriving_translation_work
from lotlens_translator.translation_stage import descriptions

STAGE = "translation"
# What `handle` acts on; the consumer passes over the rest unread (every LotSubmitted, above all).
HANDLED = frozenset(kind.event_type for kind in (VisionCompleted, LotFailed, JobCancelled))
# The work of a lot that failed at the vision stage: counted as arrived, nothing to translate.
_NO_WORK = TranslationWork().model_dump_json().encode()


def handle(engine: Engine, producer: EventProducer, envelopes: Sequence[Envelope], *, topic: str
           ) -> None:
    """Apply a consumer batch in one transaction; the lots passing through are published (and
    flushed) before it commits, those new to it only."""
    waiting: list[Arrival] = []
    settled: list[Arrival] = []
    # Each settled lot's first settling in the batch: its answer, or None for its failure (an answer
    # consumed after it, in the same batch, is a late one and passes nothing through).
    passing: dict[tuple[str, str], tuple[Envelope, VisionCompleted] | None] = {}
    cancellations: list[str] = []
    for envelope in envelopes:
        event = envelope.event
        if isinstance(event, VisionCompleted):
            # The work's JSON straight from the event's values, already validated: no model built.
            lot = Arrival(event.job_id, event.lot_id, envelope.client_id, event.total_lots,
                          arriving_translation_work(event.english_html, event.languages,
                                                    event.processed_images, event.missing_images,
                                                    tracing.job_carrier(event.job_id)))
            if target_languages(event.languages):
                waiting.append(lot)
            else:
                settled.append(lot)
                passing.setdefault((event.job_id, event.lot_id), (envelope, event))
        elif isinstance(event, LotFailed) and event.stage == "vision":
            settled.append(Arrival(event.job_id, event.lot_id, envelope.client_id, event.total_lots,
                                   _NO_WORK))
            passing.setdefault((event.job_id, event.lot_id), None)
        elif isinstance(event, JobCancelled):
            cancellations.append(event.job_id)
    with engine.begin() as conn:
        new = enqueue_arrivals(conn, STAGE, settled, status=store.SKIPPED)
        # Only a lot new here passes through: one already failed at the vision stage (a late answer
        # after its LotFailed) got a TranslationCompleted too, and subscribers of this topic could
        # read it as done before the failure. Published before the commit: a crash in between
        # leaves the lot unrecorded, and its redelivery publishes the same event (caused by the
        # English description) again.
        for key, answer in passing.items():
            if answer is not None and key in new:
                envelope, event = answer
                producer.publish(topic, caused(TranslationCompleted(
                    job_id=event.job_id, lot_id=event.lot_id,
                    descriptions=descriptions(event.languages, event.english_html, {})),
                    envelope.client_id, envelope.event_id))
        producer.flush()
        enqueue_arrivals(conn, STAGE, waiting)  # a cancelled job's lots arrive cancelled
        for job_id in cancellations:
            store.cancel_job(conn, STAGE, job_id)
