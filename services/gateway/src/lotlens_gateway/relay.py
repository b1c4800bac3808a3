"""The outbox relay: a background thread publishing the gateway's accepted events to Kafka.

Each round, per topic, one transaction: take the topic's transaction-scoped advisory lock (so of
any number of gateway replicas one relays a topic at a time, in `id` order, which keeps each
job's events in order on its partition), read the oldest unpublished rows, publish them with
the idempotent producer, wait for every acknowledgement, mark exactly those rows published and
commit. A crash or kill -9 after publishing and before the commit publishes the rows again:
duplicates, which every consumer ignores, never a loss. Kafka down: the round fails, nothing is
marked, and it is tried again with a growing pause while the rows wait in PostgreSQL.

Published rows are kept for `retention_s` (the reads overlay them until the result-store has
projected them, even through a Kafka outage) and then deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from confluent_kafka import KafkaException
from sqlalchemy import Connection, Engine, bindparam, delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from lotlens_common.clock import utc_now
from lotlens_common.kafka import EventProducer, PublishError
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext('lotlens-outbox:' || :topic))")
_MAX_PAUSE_S = 5.0
# The backlog metrics are read at most this often: counting the unpublished rows after every
# round of a 50,000-lot drain was a scan of what was left, a hundred times over.
_OBSERVE_EVERY_S = 1.0


@dataclass(frozen=True)
class RelaySettings:
    """How much one round publishes, how long it waits for Kafka, how long rows are kept."""

    batch_rows: int = 5000
    publish_timeout_s: float = 10.0
    idle_poll_s: float = 0.2
    retention_s: float = 3600.0
    prune_every_s: float = 60.0


class Relay:
    """Publishes the outbox rows of `topics`; `start` runs it in a daemon thread until `stop`."""

    def __init__(self, engine: Engine, producer: EventProducer, topics: Sequence[str],
                 settings: RelaySettings, metrics: GatewayMetrics) -> None:
        self._engine = engine
        self._producer = producer
        self._topics = tuple(topics)
        self._settings = settings
        self._metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._last_observed = -_OBSERVE_EVERY_S

    def wake(self) -> None:
        """Start the next round now (called after each append)."""
        self._wake.set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Finish the current round and end the loop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        pause = self._settings.idle_poll_s
        while not self._stop.is_set():
            try:
                busy = self.run_round()
                pause = self._settings.idle_poll_s
            except (SQLAlchemyError, KafkaException, PublishError) as exc:
                log.warning("outbox relay round failed, retrying in %.1fs: %s", pause, exc)
                busy = False
                pause = min(pause * 2, _MAX_PAUSE_S)
            if time.monotonic() - self._last_observed >= _OBSERVE_EVERY_S:
                self._observe()
            if not busy:
                self._wake.wait(pause)
                self._wake.clear()

    def run_round(self) -> bool:
        """Publish one batch of each topic; True when some topic may have more waiting."""
        busy = False
        for topic in self._topics:
            busy = self._publish_batch(topic) >= self._settings.batch_rows or busy
        if time.monotonic() - self._last_prune > self._settings.prune_every_s:
            self.prune()
        return busy

    def _publish_batch(self, topic: str) -> int:
        with self._engine.begin() as conn:
            if not conn.execute(_LOCK, {"topic": topic}).scalar_one():
                return 0  # another replica relays this topic now
            rows = conn.execute(
                select(outbox.c.id, outbox.c.job_id, outbox.c.event_type, outbox.c.payload)
                .where(outbox.c.topic == topic, outbox.c.published_at.is_(None))
                .order_by(outbox.c.id).limit(self._settings.batch_rows)).all()
            if rows:
                self._send(topic, rows)
                self._mark(conn, [row.id for row in rows])
        return len(rows)

    def _send(self, topic: str, rows: Sequence[object]) -> None:
        try:
            for row in rows:
                # With the CloudEvents headers every event carries, derived from the stored bytes.
                self._producer.publish_encoded(topic, row.job_id.encode(), row.payload.encode())  # type: ignore[attr-defined]
            self._producer.flush(self._settings.publish_timeout_s)
        except (KafkaException, PublishError):
            # Kafka never saw these or may have: either way they are sent again next round, and
            # nothing queued now may surface as a late failure of a later round.
            self._producer.discard()
            raise
        self._metrics.outbox_published.inc(len(rows))

    @staticmethod
    def _mark(conn: Connection, ids: list[int]) -> None:
        # Exactly the rows sent: a range would also cover rows committed meanwhile, unsent.
        conn.execute(update(outbox).where(outbox.c.id == func.any(bindparam("ids")))
                     .values(published_at=func.now()), {"ids": ids})

    def _observe(self) -> None:
        """Set the backlog metrics (also while Kafka is down: that is when they matter)."""
        self._last_observed = time.monotonic()
        try:
            with self._engine.connect() as conn:
                count, oldest = conn.execute(
                    select(func.count(), func.min(outbox.c.created_at))
                    .where(outbox.c.topic.in_(self._topics), outbox.c.published_at.is_(None))).one()
        except SQLAlchemyError as exc:
            log.warning("outbox backlog unknown: %s", exc)
            return
        self._metrics.outbox_backlog.set(count)
        age = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
        self._metrics.outbox_oldest_age.set(max(age, 0.0))

    def prune(self) -> None:
        """Delete rows published longer than the retention period ago."""
        self._last_prune = time.monotonic()
        cutoff = utc_now() - timedelta(seconds=self._settings.retention_s)
        with self._engine.begin() as conn:
            conn.execute(delete(outbox).where(outbox.c.topic.in_(self._topics),
                                              outbox.c.published_at < cutoff))
