"""The outbox relay: a background thread publishing the gateway's accepted events to Kafka.

Each round, per topic, one transaction: take the topic's transaction-scoped advisory lock (so of
any number of gateway replicas one relays a topic at a time, in `id` order, which keeps each job's
events in order on its partition), read the oldest unpublished rows the producer does not hold yet
(from the topic's floor: no index holds `published_at`, `outbox_floor`), publish them with the
idempotent producer, wait up to `publish_timeout_s` for their acknowledgements, mark exactly the
rows Kafka acknowledged (this round's and earlier rounds' late ones) and commit. A crash or kill
-9 after publishing and before the commit publishes the rows again: duplicates, which every
consumer ignores, never a loss. Kafka slow or down: what the producer holds stays queued, retried
by librdkafka in order for as long as it takes (the producer times no message out: a job's later
events went out ahead of an earlier one that timed out and was sent again), and rounds mark
whatever arrives; the rows wait in PostgreSQL meanwhile. Once all or nothing, and dropping what
was queued at each failed round, a broker slower than the deadline never saw a round succeed: the
backlog stayed whole however much Kafka had written.

A round runs when an append in this process announces rows, at once again while rounds come back
full, soon when another replica held a topic's lock (the rows it waits on may be ours), and
otherwise every `sweep_s` for rows nobody announced (those of a replica that died between its
commit and its round). Polling an idle outbox five times a second read every row published
since the last vacuum, at each poll: published rows leave dead entries in the unpublished-rows
index until then, about 25 ms of database CPU per poll after a 50,000-lot job.

Published rows are kept for `retention_s` (the reads overlay them until the result-store has
projected them, even through a Kafka outage), and after it until the read models hold them
(`outbox_prune`); never less than the rate-limit windows read them (`outbox.LONGEST_WINDOW_S`).
The same minute-ly prune deletes clients' webhook secrets whose rotation overlap has ended: the
gateway owns that table too.

The configured clients' missing secrets are made once per process (`make_missing_secrets`): at
start-up, and at the prunes after it until PostgreSQL has taken them (tried at start-up alone, a
client whose secret could not be stored then had none until the next restart). Once made, a
secret goes missing only when an operator deletes it (`lotlens-admin clients delete`), and this
process's configuration is older than that decision: made again at every prune, a replica still
running a configuration a rollout removed the client from brought its secret back after every
delete. A gateway started later with the client configured makes it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from confluent_kafka import KafkaException
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    func,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from lotlens_common import webhook_secrets
from lotlens_common.clock import utc_now
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import LONGEST_WINDOW_S
from lotlens_gateway.outbox_floor import Floor
from lotlens_gateway.outbox_gauges import observe
from lotlens_gateway.outbox_prune import OLDEST, prune_held

log = logging.getLogger(__name__)

_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext('lotlens-outbox:' || :topic))")
# A submission COPYs up to 50,000 rows at once, and the table's statistics still say what
# autovacuum last saw, usually an outbox with next to nothing unpublished: for up to a minute the
# planner then read every unpublished row and sorted them on disk for each round's 5,000 (60-75 ms
# and a 37 MB temporary file per round), and a status poll walked every row of the job to find its
# `JobSubmitted` (40-60 ms per poll). The round that finds a backlog refreshes them.
_REFRESH_STATISTICS = text(f"ANALYZE {outbox.name}")
_MAX_PAUSE_S = 5.0
# Of a stop's time, what the last round does after its wait for Kafka: the marking. (The
# producer's check that a broker answers is part of the wait, which ends when it was asked to.)
_AFTER_WAIT_S = 1.0
# Published rows deleted per transaction, and transactions per prune (a minute apart): 200,000 a
# minute at most, far above what a gateway publishes.
PRUNE_ROWS, PRUNE_ROUNDS = 5000, 40
# The backlog metrics are read at most this often: counting the unpublished rows after every
# round of a 50,000-lot drain was a scan of what was left, a hundred times over.
_OBSERVE_EVERY_S = 1.0


# What a round found for a topic: a full batch (more may wait), the lock held by another replica,
# or every row it could see published.
Outcome = Literal["full", "contended", "stalled", "drained"]
FULL: Outcome = "full"
CONTENDED: Outcome = "contended"
STALLED: Outcome = "stalled"  # messages held, none acknowledged in the round's wait
DRAINED: Outcome = "drained"


@dataclass(frozen=True)
class RelaySettings:
    """How much one round publishes, how long it waits for Kafka, how soon it looks again for rows
    no append announced (`retry_s` after a contended lock, `sweep_s` otherwise), how long rows
    are kept."""

    batch_rows: int = 5000
    publish_timeout_s: float = 10.0
    retry_s: float = 0.2
    sweep_s: float = 5.0
    retention_s: float = 3600.0
    prune_every_s: float = 60.0
    # The configured clients: those without a `whsec_` webhook secret get one (`make_missing_secrets`).
    clients: tuple[str, ...] = ()


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
        # Outbox ids the producer holds (no delivery report yet), and those Kafka acknowledged and
        # not yet marked. Delivery reports are served on this thread (in publish, settle, discard).
        self._held: set[int] = set()
        self._acknowledged: set[int] = set()
        # Held ids the producer dropped (failed, purged, a new producer) since the last floor
        # proposal: unpublished, and no longer in either set above.
        self._dropped: set[int] = set()
        self._failed_since_purge = False
        self._generation = producer.generation
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # set by `stop`: the last rounds end by then
        self._last_prune = 0.0
        self._prune_after = OLDEST
        for topic in self._topics:  # at 0 from the start: the first rows left behind are an increase()
            metrics.outbox_left_behind.labels(topic=topic)
        self._secrets_made = False
        self._backlogged: set[str] = set()
        self._last_observed = -_OBSERVE_EVERY_S
        # Per topic, the id below which every row is published (`outbox_floor`): this process's
        # own, from 0 at its start.
        self._floors: dict[str, Floor] = {}

    def wake(self) -> None:
        """Start the next round now (called after each append)."""
        self._wake.set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Finish the current round, publish what is left (`last_rounds`) and end the loop, all
        within `timeout_s`."""
        self._deadline = time.monotonic() + max(timeout_s - _AFTER_WAIT_S, 0.0)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def join(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the loop a `stop` ended; whether it has ended. (A stop waits
        no longer than its budget, so a round waiting on an unreachable Kafka can outlast it.)"""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._thread is None or not self._thread.is_alive()

    def last_rounds(self) -> Outcome:
        """Rounds until every topic is drained or the stop's deadline passes; the last outcome.

        The rows of the requests drained at a shutdown were left to the next process's first round
        or another replica's sweep (5 s on): stopping ended the loop without a round. A topic
        another replica holds is asked again (its round may have begun before our rows were
        committed); Kafka unreachable, the round's wait ends at the deadline."""
        outcome: Outcome = STALLED
        while self._time_left() > 0:
            try:
                outcome = self._most_pressing({self._publish_batch(topic) for topic in self._topics})
            except (SQLAlchemyError, KafkaException, PublishError) as exc:
                log.warning("the outbox relay's last round failed: %s", exc)
                break
            if outcome == DRAINED:
                return outcome
            if outcome == CONTENDED:
                time.sleep(min(self._settings.retry_s, self._time_left()))
        log.warning("the outbox relay stopped with rows unpublished (%s): any gateway's next round "
                    "publishes them", outcome)
        return outcome

    def _time_left(self) -> float:
        return max(self._deadline - time.monotonic(), 0.0) if self._deadline is not None else 0.0

    def _settle_s(self) -> float:
        """How long a round waits for Kafka: never past the stop's deadline."""
        if self._deadline is None:
            return self._settings.publish_timeout_s
        return min(self._settings.publish_timeout_s, self._time_left())

    def died(self) -> bool:
        """Whether the loop's thread ended without a `stop`: an error none of its rounds expects
        (a defect) ended it, and this process publishes nothing until it restarts (`/livez`)."""
        return self._thread is not None and not self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # logged as every line is (JSON), not as the thread's bare traceback
            log.exception("the outbox relay died: this process publishes nothing more (/livez fails)")
            return
        self.last_rounds()

    def _loop(self) -> None:
        backoff = self._settings.retry_s
        while not self._stop.is_set():
            try:
                outcome = self.run_round()
                if outcome == STALLED:
                    # Held the topic's lock through a wait that got nothing: let another replica
                    # (perhaps reaching Kafka) take it before trying again.
                    pause, backoff = backoff, min(backoff * 2, _MAX_PAUSE_S)
                else:
                    pause, backoff = self._pause_after(outcome), self._settings.retry_s
            except (SQLAlchemyError, KafkaException, PublishError) as exc:
                log.warning("outbox relay round failed, retrying in %.1fs: %s", backoff, exc)
                pause, backoff = backoff, min(backoff * 2, _MAX_PAUSE_S)
            if time.monotonic() - self._last_observed >= _OBSERVE_EVERY_S:
                self._observe()
            if pause:
                self._wake.wait(pause)
                self._wake.clear()

    def _pause_after(self, outcome: Outcome) -> float:
        if outcome == FULL:
            return 0.0
        return self._settings.retry_s if outcome == CONTENDED else self._settings.sweep_s

    def run_round(self) -> Outcome:
        """Publish one batch of each topic; the most pressing topic's outcome."""
        try:
            outcomes = {self._publish_batch(topic) for topic in self._topics}
        except SQLAlchemyError:
            # The floors start over from 0: after a failover, a replica that had not received a
            # committed tail hands its ids out again, below a floor that had passed them. (One
            # the round does not meet, its connection replaced already: `Floor.read`.)
            self._floors.clear()
            raise
        if time.monotonic() - self._last_prune > self._settings.prune_every_s:
            self.prune()
        return self._most_pressing(outcomes)

    @staticmethod
    def _most_pressing(outcomes: set[Outcome]) -> Outcome:
        return next((o for o in (FULL, CONTENDED, STALLED) if o in outcomes), DRAINED)

    def _publish_batch(self, topic: str) -> Outcome:
        if self._producer.generation != self._generation:
            # A new librdkafka producer: what the old one held is gone, unreported; send it again.
            self._generation = self._producer.generation
            self._dropped |= self._held
            self._held.clear()
        with self._engine.begin() as conn:
            if not conn.execute(_LOCK, {"topic": topic}).scalar_one():
                return CONTENDED  # another replica relays this topic now
            room = self._settings.batch_rows - len(self._held)
            # Every unpublished row in id order from the topic's floor but those the producer
            # holds: a row committed after a higher id was sent (a big COPY still running) is
            # found by the next round, the floor kept below it (`outbox_floor`).
            floor = self._floors.setdefault(topic, Floor())
            rows: list[Any] = []
            if room > 0:
                held = sorted(self._held)
                rows = floor.read(conn, topic, held, room)
                # After the read, which starts a floor over on a new server: ids a failover handed
                # out again are not a defect of the floor.
                if left_behind := floor.audit(conn, topic, held, time.monotonic()):
                    self._left_behind(topic, left_behind)
            self._send(topic, rows)
            # Idle in its transaction, the topic's lock held: the idle-transaction timeout
            # outlasts this wait (`GatewaySettings`). A session ended in it costs a round: what
            # Kafka acknowledged is marked by the next (sent once more meanwhile, a duplicate).
            waiting = self._producer.settle(self._settle_s())
            if self._failed_since_purge:
                # A message Kafka will never have (refused for good): drop what is still queued
                # behind it too, so all of it goes again in id order, the job's events in order.
                self._failed_since_purge = False
                self._producer.discard()
            # What Kafka acknowledged, this round's rows or an earlier round's late ones; kept
            # until the marking commits (a failed commit marks them next round).
            acknowledged = sorted(self._acknowledged)
            if acknowledged:
                self._mark(conn, acknowledged)
            bound = floor.bound(conn) if room > 0 else None
        self._acknowledged.difference_update(acknowledged)
        if room > 0:  # committed: what was marked is published
            # The ids by index: by name, a Row's attribute, took 0.29 us a row where this takes 0.03.
            floor.moved(len(rows) >= room, {row[0] for row in rows}.difference(acknowledged)
                        | self._held | self._acknowledged | self._dropped, time.monotonic(), bound)
            self._dropped.clear()
        self._metrics.outbox_published.inc(len(acknowledged))
        full = len(rows) >= room or waiting > 0
        if full and topic not in self._backlogged:
            self._refresh_statistics()
        (self._backlogged.add if full else self._backlogged.discard)(topic)
        if waiting and not acknowledged:
            return STALLED
        return FULL if full else DRAINED

    def _left_behind(self, topic: str, rows: int) -> None:
        """Rows an audit found below the floor (`outbox_floor`): published now, late, by a defect."""
        log.error("the outbox relay's floor of %s had passed %d unpublished rows; they go out from the "
                  "next round", topic, rows)
        self._metrics.outbox_left_behind.labels(topic=topic).inc(rows)

    def _refresh_statistics(self) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(_REFRESH_STATISTICS)
        except SQLAlchemyError as exc:  # autovacuum will get to it; the relay goes on
            log.warning("refreshing the outbox's statistics failed: %s", exc)

    def _send(self, topic: str, rows: Sequence[Any]) -> None:
        # Looked up once a round, not once a row; the rows unpacked as tuples.
        publish, held = self._producer.publish_row, self._held
        delivered, failed = self._delivered, self._failed
        for row_id, job_id, _event_type, payload in rows:
            held.add(row_id)
            try:
                # With the CloudEvents headers every event carries, derived from the stored bytes.
                publish(topic, job_id.encode(), payload.encode(), row_id, delivered, failed)
            except BaseException:
                held.discard(row_id)  # not queued: the next round sends it
                raise

    def _delivered(self, row_id: int) -> None:
        self._held.discard(row_id)
        self._acknowledged.add(row_id)

    def _failed(self, row_id: int, purged: bool) -> None:
        """A row Kafka will never have (refused, purged): a later round sends it again."""
        self._held.discard(row_id)
        self._dropped.add(row_id)
        self._failed_since_purge = self._failed_since_purge or not purged

    @staticmethod
    def _mark(conn: Connection, ids: list[int]) -> None:
        # Exactly the rows sent: a range would also cover rows committed meanwhile, unsent. No
        # index holds `published_at` and pages are filled to half (migration 0039): the update is
        # heap-only, 3.3 us a row where it took 9.5 with its three new index entries.
        conn.execute(update(outbox).where(outbox.c.id == func.any(bindparam("ids")),
                                          outbox.c.published_at.is_(None))
                     .values(published_at=func.now()), {"ids": ids})

    def _observe(self) -> None:
        """Set the backlog and floor gauges (`outbox_gauges`)."""
        self._last_observed = time.monotonic()
        observe(self._engine, self._topics, self._floors, self._metrics, self._last_observed)

    def make_missing_secrets(self) -> None:
        """Give each configured client without a current `whsec_` secret one (at start-up, then at
        each prune until it has succeeded once: see the module's docstring)."""
        with self._engine.begin() as conn:
            webhook_secrets.ensure(conn, self._settings.clients)
        self._secrets_made = True

    def prune(self) -> int:
        """Delete rows published longer than the retention period ago that the read models hold
        (`outbox_prune`), `PRUNE_ROWS` per transaction and at most `PRUNE_ROUNDS` of those per
        call, and webhook secrets past their overlap (and make the configured clients' missing
        ones, until that has succeeded once); how many rows went.

        In one statement, an hour after a long Kafka outage each replica deleted the whole backlog
        at once (250,000 rows with their payloads): the replicas queued on each other's row locks
        and none published meanwhile. Skipping locked rows, replicas share the work instead."""
        self._last_prune = time.monotonic()
        cutoff = utc_now() - timedelta(seconds=max(self._settings.retention_s, LONGEST_WINDOW_S))
        pruned, self._prune_after = prune_held(self._engine, self._topics, cutoff, PRUNE_ROWS, PRUNE_ROUNDS,
                                               self._prune_after)
        with self._engine.begin() as conn:
            # Kept, every rotated-out secret stayed for good after it stopped signing.
            retired = webhook_secrets.prune(conn, utc_now())
        if not self._secrets_made:
            self.make_missing_secrets()
        if retired:
            log.info("deleted %d webhook secrets past their rotation overlap", retired)
        return pruned
