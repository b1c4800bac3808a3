"""Event → effects: a completed job gets one scheduled delivery per (webhook URL, part).

A `WebhookRedeliveryRequested` (the client's manual replay) schedules the same set again, under
new delivery ids. The gateway accepts one only for a job the read models show finished (409
`JOB_ENDING` while only its own record says so); one that meets a job they do not show finished
anyway (a projection rebuilt meanwhile) is dead-lettered alone, visible and replayable. Retried
as transient, it stopped the consumer on every partition, every client's webhooks with it.

The read models are complete when `JobCompleted` is emitted (result-store writes them first).
Deliveries have deterministic ids and a URL already scheduled (by that event) is skipped, so a
re-delivered `JobCompleted` or redelivery request schedules nothing twice. Everything a batch of
events does is one transaction; the consumer loop stores the offsets only after it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from lotlens_common import tracing
from lotlens_common.clock import utc_now
from lotlens_common.envelope import Envelope
from lotlens_common.events import TERMINAL_JOB_STATUSES, Event, JobCompleted, WebhookRedeliveryRequested
from lotlens_common.read_models import get_job, iter_lot_results
from lotlens_common.tables import lots
from lotlens_webhook_dispatcher import dispatch_queue, metrics, payloads

log = logging.getLogger(__name__)


class JobNotInReadModels(LookupError):
    """`JobCompleted` named a job the read models do not have (a poison message)."""


class JobNotFinished(LookupError):
    """A redelivery named a job the read models do not show finished: scheduled, its body said
    `batch_job_completed` with the job still `processing`. Dead-lettered, to replay once it is."""


def schedule_deliveries(conn: Connection, envelope: Envelope, max_payload_bytes: int,
                        now: datetime) -> int:
    """Schedule the webhook deliveries of a completed job; returns how many were added."""
    job_id = envelope.job_id
    job = get_job(conn, job_id)
    redelivery = envelope.event if isinstance(envelope.event, WebhookRedeliveryRequested) else None
    if redelivery is not None and (job is None or job.status not in TERMINAL_JOB_STATUSES):
        raise JobNotFinished(f"job {job_id} is {job.status if job else 'not in the read models'!r}: "
                             f"redelivery {redelivery.redelivery_id} is not scheduled")
    if job is None:
        raise JobNotInReadModels(f"job {job_id} is not in the read models")
    url_of: dict[str, str] = {lot_id: url for lot_id, url in conn.execute(
        select(lots.c.lot_id, lots.c.webhook).where(lots.c.job_id == job_id, lots.c.webhook.is_not(None)))}
    urls = sorted(set(url_of.values()))
    redelivery_id = redelivery.redelivery_id if redelivery else ""
    # By URL, not only by delivery id (ON CONFLICT): a request handled again (a relay re-publish, a
    # consumer replay) after a cancelled job's late answers grew a URL's body planned more parts,
    # and a new "part 2 of 2" repeated lots part 1, still "1 of 1", carried already.
    new_urls = set(urls) - dispatch_queue.scheduled_urls(conn, job_id, urls, redelivery_id)
    if not new_urls:
        return 0
    parts = payloads.plan_parts(
        payloads.head(job),
        ((url_of[lot["lot_id"]], lot) for lot in iter_lot_results(conn, job)
         if url_of.get(lot["lot_id"]) in new_urls),
        max_payload_bytes)
    added = dispatch_queue.schedule(conn, job_id, job.client_id or envelope.client_id, parts, now,
                                    redelivery_id, tracing.job_carrier(job_id).get("traceparent"))
    metrics.DELIVERIES_SCHEDULED.inc(added)
    log.info("job %s: %d deliveries scheduled for %d webhook URLs", job_id, added, len(parts),
             extra={"job_id": job_id})
    return added


Handler = Callable[[Connection, Envelope, int, datetime], int]
HANDLERS: dict[type[Event], Handler] = {JobCompleted: schedule_deliveries,
                                        WebhookRedeliveryRequested: schedule_deliveries}


def completion_handler(engine: Engine, max_payload_bytes: int, clock: Callable[[], datetime] = utc_now,
                       on_scheduled: Callable[[], None] = lambda: None
                       ) -> Callable[[Sequence[Envelope]], None]:
    """The consumer's batch handler: every event of the batch in one transaction.

    `on_scheduled` runs after the commit when deliveries were added (the dispatcher's wake-up).
    """
    def handle(envelopes: Sequence[Envelope]) -> None:
        added = 0
        with engine.begin() as conn:
            for envelope in envelopes:
                handler = HANDLERS.get(type(envelope.event))
                if handler is not None:
                    added += handler(conn, envelope, max_payload_bytes, clock())
        if added:
            on_scheduled()
    return handle
