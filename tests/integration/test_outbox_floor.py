"""The relay marks rows published heap-only, and reads from a floor that never passes a row an
append still running will commit (`outbox_floor`); a floor held back is on `/metrics`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, func, select, text
from sqlalchemy.exc import OperationalError

from lotlens_common import row_sets
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import outbox
from lotlens_gateway import outbox as outbox_module
from lotlens_gateway import outbox_floor
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.outbox_floor import AUDIT_EVERY_S, Floor
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import new_id
from tests.integration.gateway_support import consume
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def _job(client_id: str, lots: int) -> list[Envelope]:
    job_id, now = new_id("job-"), datetime.now(UTC)
    head = Envelope(JobSubmitted(job_id=job_id, client_id=client_id, api_version="1.0.0", languages=("en",),
                                 total_lots=lots, webhook_urls=(), created_at=now, estimated_completion=now),
                    client_id=client_id)
    return [head, *(Envelope(LotSubmitted(job_id=job_id, lot_id=f"{job_id}-{i}", seq=i, total_lots=lots,
                                          additional_info="", image_urls=(), languages=("en",)),
                             client_id=client_id) for i in range(lots))]


def test_marking_rows_published_touches_no_index(settings: ServiceSettings, engine: Engine) -> None:
    # Each marking wrote the row's new version elsewhere with a new entry in every outbox index:
    # 9.5 us and 1.3 kB of WAL a row, where a heap-only update takes 3.3 us and under 0.1 kB.
    # A topic no relay serves: a relay of the session marking them meanwhile left fewer to count.
    job = _job("hot-test", 40)
    Outbox(engine, GatewayMetrics(), 1_000_000).append(new_id("hot-topic-"), job)
    counts = text("SELECT pg_stat_get_xact_tuples_updated('outbox'::regclass), "
                  "pg_stat_get_xact_tuples_hot_updated('outbox'::regclass)")
    with engine.begin() as conn:
        ids = conn.execute(select(outbox.c.id).where(outbox.c.job_id == job[0].job_id)).scalars().all()
        # Counted from here: the counts can still hold a pooled connection's earlier markings,
        # not yet flushed to the statistics (44 where this transaction made 41).
        before = conn.execute(counts).one()
        Relay._mark(conn, list(ids))
        after = conn.execute(counts).one()
    assert (after[0] - before[0], after[1] - before[1]) == (41, 41)


def test_rows_an_append_commits_after_later_rows_were_published_are_published_too(
        settings: ServiceSettings, engine: Engine) -> None:
    # The relay walks the primary key from a floor below which every row is published; an append
    # still running holds ids below rows committed after it, and a floor moved past them would
    # never publish them.
    topic = settings.topics.submissions
    store = Outbox(engine, GatewayMetrics(), 1_000_000)
    early, late = _job("floor-test", 30), _job("floor-test", 30)
    copied, release = threading.Event(), threading.Event()
    early_ids: list[int] = []

    def hold(conn: Connection) -> None:
        early_ids.extend(conn.execute(select(func.min(outbox.c.id), func.max(outbox.c.id))
                                      .where(outbox.c.job_id == early[0].job_id)).one())
        copied.set()
        release.wait(30)

    writer = threading.Thread(target=store.append, args=(topic, early), kwargs={"also": hold})
    writer.start()
    try:
        assert copied.wait(10)
        store.append(topic, late)  # higher ids, committed first
        relay = Relay(engine, EventProducer(settings.kafka, "floor-test"), [topic], RelaySettings(),
                      GatewayMetrics())
        for _ in range(4):  # enough rounds to take up a proposal, had it not waited
            relay.run_round()
            time.sleep(0.05)
    finally:
        release.set()
        writer.join(30)
    _rounds_until(relay, lambda: relay._floors[topic].below > early_ids[1], "the floor past the early rows")
    seen = consume(settings.kafka.bootstrap_servers, topic, 62, timeout_s=10)
    assert sorted(envelope.event_id for _, envelope in seen) == sorted(e.event_id for e in early + late)


def test_rows_of_the_newest_running_append_are_published_though_an_older_one_committed_higher_ids(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two appends: the older transaction copies after the newer one and commits first, with the
    # higher ids. The newer one's transaction id is the newest: no transaction after it has
    # ended, so a snapshot's `xmax` (one past the latest ended) does not cover it, and a floor
    # proposed with that `xmax` was taken up while it ran. Its rows, committed below the floor,
    # were never published (until the gateway restarted).
    topic = settings.topics.submissions
    store = Outbox(engine, GatewayMetrics(), 1_000_000)
    older, newer = _job("newest-xid-test", 3), _job("newest-xid-test", 3)
    older_has_its_id, newer_copied, release = threading.Event(), threading.Event(), threading.Event()
    copy_in = row_sets.copy_in

    def in_order(conn: Connection, statement: str, rows: bytes | list[bytes]) -> None:
        if older[0].job_id.encode() in (rows if isinstance(rows, bytes) else b"".join(rows)):
            older_has_its_id.set()  # its transaction id taken (`Outbox.append`), its ids not yet
            assert newer_copied.wait(10)
        copy_in(conn, statement, rows)

    def hold(_conn: Connection) -> None:
        newer_copied.set()
        release.wait(30)

    monkeypatch.setattr(outbox_module, "copy_in", in_order)
    first = threading.Thread(target=store.append, args=(topic, older))
    first.start()
    assert older_has_its_id.wait(10)
    second = threading.Thread(target=store.append, args=(topic, newer), kwargs={"also": hold})
    second.start()
    relay = Relay(engine, EventProducer(settings.kafka, "newest-xid-test"), [topic], RelaySettings(),
                  GatewayMetrics())
    try:
        first.join(10)
        assert not first.is_alive()
        for _ in range(4):  # enough rounds to take up a proposal, had it not waited
            relay.run_round()
            time.sleep(0.05)
    finally:
        release.set()
        second.join(10)

    def unpublished() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(
                outbox.c.job_id.in_([older[0].job_id, newer[0].job_id]), outbox.c.published_at.is_(None)))
                .scalar_one())

    _rounds_until(relay, lambda: unpublished() == 0, "every row published, none left below the floor")


def test_rows_a_floor_passed_are_found_by_its_audit_published_and_counted(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A floor that passes a row is a defect (one did: the `xmax` above), and it hid: the row was
    # never read again, nor counted in the backlog, which counts from the floor.
    topic = settings.topics.submissions
    job = _job("audit-test", 4)
    Outbox(engine, GatewayMetrics(), 1_000_000).append(topic, job)
    with engine.connect() as conn:
        first, top = conn.execute(select(func.min(outbox.c.id), func.max(outbox.c.id))
                                  .where(outbox.c.job_id == job[0].job_id)).one()
    metrics = GatewayMetrics()
    relay = Relay(engine, EventProducer(settings.kafka, "audit-test"), [topic], RelaySettings(), metrics)
    # Past the job's rows; its audit starts at them (below them, earlier tests' rows of the topic
    # may be unpublished too: appended with no relay to publish them).
    floor = relay._floors[topic] = Floor(below=top + 1, audited_at=time.monotonic(), _audit_after=first)

    def left_behind() -> float | None:
        return metrics.registry.get_sample_value("lotlens_outbox_rows_left_below_floor_total",
                                                 {"topic": topic})

    def unpublished() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(
                outbox.c.job_id == job[0].job_id, outbox.c.published_at.is_(None))).scalar_one())

    relay.run_round()
    assert (unpublished(), left_behind()) == (len(job), 0)
    monkeypatch.setattr(outbox_floor, "AUDIT_IDS", 2)
    floor.audited_at -= AUDIT_EVERY_S  # a minute on
    relay.run_round()  # its audit finds the slice's 2 rows, and the floor goes back to the first
    assert (left_behind(), floor.below) == (2, first)
    _rounds_until(relay, lambda: unpublished() == 0, "the job's rows published")
    # Taken past them again by its proposals; the next audit of the same ids finds nothing.
    _rounds_until(relay, lambda: floor.below > top, "the floor past the rows again")
    floor._audit_after, floor.audited_at = first, floor.audited_at - AUDIT_EVERY_S
    audited = floor.audited_at
    relay.run_round()
    assert floor.audited_at > audited and floor._audit_after == first + 2 and left_behind() == 2


def test_a_held_row_the_producer_drops_in_the_round_that_moves_the_floor_stays_above_it(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rows an append still running holds are proposed past (round A); read and held by the
    # producer in a round that cannot take the proposal up yet (an older transaction runs: M); and
    # dropped by the producer (a purge) in the round that does (B), after its read. Neither read
    # nor held nor acknowledged there, only the relay's dropped ids keep the floor below them.
    topic = settings.topics.submissions
    store = Outbox(engine, GatewayMetrics(), 1_000_000)
    early, late = _job("dropped-test", 5), _job("dropped-test", 5)
    copied, release = threading.Event(), threading.Event()
    early_ids: list[int] = []

    def hold(conn: Connection) -> None:
        early_ids.extend(conn.execute(select(outbox.c.id).where(outbox.c.job_id == early[0].job_id))
                         .scalars())
        copied.set()
        release.wait(30)

    unreachable = settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})  # never acknowledges
    relay = Relay(engine, EventProducer(unreachable, "dropped-test"), [topic],
                  RelaySettings(publish_timeout_s=0.1), GatewayMetrics())
    older = engine.connect()
    older.begin()
    older.execute(text("SELECT pg_current_xact_id()"))  # holds the horizon back through round M
    writer = threading.Thread(target=store.append, args=(topic, early), kwargs={"also": hold})
    writer.start()
    try:
        assert copied.wait(10)
        store.append(topic, late)
        relay.run_round()  # A: sends `late`, proposes past `early`
        proposal = relay._floors[topic].proposed
        assert proposal is not None and proposal[0] > max(early_ids)
    finally:
        release.set()
        writer.join(30)
    relay.run_round()  # M: reads and sends `early`; the proposal waits for `older`
    assert relay._floors[topic].below == 0 and relay._held >= set(early_ids)
    older.rollback()
    older.close()
    def oldest() -> int:
        with engine.connect() as conn:
            horizon = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            return int(conn.execute(horizon).scalar_one())

    wait_for(lambda: oldest() >= proposal[1],  # every transaction older than the proposal has ended
             lambda: f"the transactions older than the proposal to end: {_oldest_transaction(engine)}",
             timeout_s=90)
    sent = relay._send

    def send_then_purge(topic_sent: str, rows: Sequence[Any]) -> None:
        sent(topic_sent, rows)
        for row_id in early_ids:  # as the producer's purge reports them
            relay._failed(row_id, True)

    monkeypatch.setattr(relay, "_send", send_then_purge)
    relay.run_round()  # B
    assert 0 < relay._floors[topic].below <= min(early_ids)


def test_an_append_has_its_transaction_id_before_its_rows_have_ids(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The floor counts on it (`outbox_floor`): ids handed out before the transaction id would let
    # a proposal's wait end while rows below it were still to be committed.
    copy_in = row_sets.copy_in
    assigned: list[object] = []

    def checked(conn: Connection, statement: str, rows: bytes | list[bytes]) -> None:
        assigned.append(conn.execute(text("SELECT pg_current_xact_id_if_assigned()")).scalar_one())
        copy_in(conn, statement, rows)

    monkeypatch.setattr(outbox_module, "copy_in", checked)
    Outbox(engine, GatewayMetrics(), 1_000_000).append(settings.topics.submissions, _job("xid-test", 2))
    assert len(assigned) == 1 and assigned[0] is not None


def test_the_outbox_ids_are_handed_out_one_at_a_time(engine: Engine) -> None:
    # The floor counts on it (`outbox_floor`): with `CACHE 50` (a tuning for large COPYs) a session
    # inserts ids it cached earlier after higher ones have committed, below a floor past them.
    with engine.connect() as conn:
        cache = conn.execute(text(  # the sequence of this search path's outbox (tests make others)
            "SELECT seqcache FROM pg_sequence "
            "WHERE seqrelid = pg_get_serial_sequence('outbox', 'id')::regclass")).scalar_one()
    assert cache == 1


def test_a_round_the_database_fails_starts_the_floors_over(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = settings.topics.submissions
    Outbox(engine, GatewayMetrics(), 1_000_000).append(topic, _job("failover-test", 2))
    relay = Relay(engine, EventProducer(settings.kafka, "failover-test"), [topic], RelaySettings(),
                  GatewayMetrics())
    relay._floors[topic] = Floor(below=10**12)  # past ids a promoted replica may hand out again

    def lost(*_args: object) -> None:
        raise OperationalError("SELECT", {}, Exception("the server closed the connection"))

    monkeypatch.setattr(Floor, "read", lost)
    with pytest.raises(OperationalError):
        relay.run_round()
    assert relay._floors == {}


def _oldest_transaction(engine: Engine) -> str:
    """The server's oldest transaction with an id, any database's: another test worker's holds the
    floors of every worker (their databases share the horizon)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT datname, pid, state, extract(epoch FROM now() - xact_start), left(query, 80) "
            "FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
            "ORDER BY age(backend_xid) DESC LIMIT 1")).first()
    return f"the oldest transaction: {tuple(row) if row else None}"


def _rounds_until(relay: Relay, condition: Callable[[], bool], what: str) -> None:
    """Relay rounds until `condition` holds; a floor moves once every older transaction on the
    server has ended, which under load (another worker's round waiting for Kafka) takes a while."""
    def round_then() -> bool:
        relay.run_round()
        return condition()

    wait_for(round_then, lambda: f"{what}: {_oldest_transaction(relay._engine)}", timeout_s=90)


def test_a_transaction_holding_the_floor_back_shows_on_the_gauges_until_it_ends(
        settings: ServiceSettings, engine: Engine) -> None:
    # A transaction with its id open anywhere on the server holds every floor back: each read walks
    # every row published since, a round's cost growing with time. No metric said so: the backlog
    # grew later, pointing nowhere.
    topic = settings.topics.submissions
    store, metrics = Outbox(engine, GatewayMetrics(), 1_000_000), GatewayMetrics()
    relay = Relay(engine, EventProducer(settings.kafka, "held-floor-test"), [topic],
                  RelaySettings(sweep_s=0.1), metrics)
    store.on_append(relay.wake)

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"lotlens_outbox_floor_{name}", {"topic": topic})

    def published(job: list[Envelope]) -> bool:
        with engine.connect() as conn:
            return not conn.execute(select(func.count()).where(
                outbox.c.job_id == job[0].job_id, outbox.c.published_at.is_(None))).scalar_one()

    def read() -> str:
        return f"lag {gauge('lag_ids')}, held {gauge('held_seconds')} s"

    with engine.begin() as conn:  # rows published before: the new relay's floor starts below them
        conn.execute(text("INSERT INTO outbox (topic, job_id, client_id, event_type, payload, published_at) "
                          "SELECT :topic, 'held-floor-earlier', 'c', 'JobSubmitted', '{}', now() "
                          "FROM generate_series(1, 20000)"), {"topic": topic})
    holder = engine.connect()
    holder.begin()
    holder.execute(text("SELECT pg_current_xact_id()"))
    holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
    relay.start()
    try:
        first, second = _job("held-floor-test", 100), _job("held-floor-test", 200)
        store.append(topic, first)
        wait_for(lambda: published(first) and (gauge("lag_ids") or 0) >= len(first)
                 and (gauge("held_seconds") or 0) > 0, lambda: f"the first job's rows held back: {read()}")
        lag, held = gauge("lag_ids") or 0, gauge("held_seconds") or 0
        with engine.begin() as conn:  # pruned meanwhile (another replica's prune): no longer walked
            conn.execute(delete(outbox).where(outbox.c.job_id == "held-floor-earlier"))
        time.sleep(1.0)
        store.append(topic, second)  # published too, and walked by every read from now on
        # Walked from the first job's rows on at least (the earlier rows may be pruned by now).
        wait_for(lambda: published(second) and (gauge("lag_ids") or 0) >= len(first) + len(second)
                 and (gauge("held_seconds") or 0) >= held + 1.0,
                 lambda: f"the second job's rows held back too, from {lag} ids and {held} s: {read()}")
        # At least the transaction's own age, never more (its role's session: pg_stat_activity
        # shows its start to us).
        held_now = gauge("held_seconds") or 0  # read first: the relay sets it again once a second
        with engine.connect() as conn:
            age = conn.execute(text("SELECT extract(epoch FROM now() - xact_start) FROM pg_stat_activity "
                                    "WHERE pid = :pid"), {"pid": holder_pid}).scalar_one()
        assert 1.0 <= held_now <= float(age)
    finally:
        holder.rollback()
        holder.close()
    try:
        wait_for(lambda: gauge("held_seconds") == 0 and gauge("lag_ids") == 0,
                 lambda: f"the floor free again: {read()}; {_oldest_transaction(engine)}", timeout_s=90)
    finally:
        relay.stop(5)
