"""One durable write per submission: the outbox, its relay, and reads that see the gateway's writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise

import httpx2
import pytest
from sqlalchemy import Engine, create_engine, event, func, insert, select, text

from lotlens_common.envelope import Envelope, decode, encode
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, ServiceSettings
from lotlens_common.tables import jobs, lots, outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox, facts_of
from lotlens_gateway.relay import DRAINED, FULL, Relay, RelaySettings
from tests.conftest import Infra, new_id, own_schema, rows_read
from tests.events import read_to_end
from tests.integration.gateway_support import Gateway, consume, insert_running_job, make_lots, running_gateway
from tests.polling import wait_for
from tests.servers import free_port

pytestmark = pytest.mark.integration

DEAD_KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:9")
# Generous: no wall-clock assertion, only "not the old 30 s wait on Kafka".
REQUEST_TIMEOUT_S = 20.0


@pytest.fixture()
def gateway_without_kafka(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway whose broker is unreachable (its relay cannot publish). Its stop gives the relay's
    last rounds no time: with the rows unpublishable they waited out the whole budget, 12 s of
    each test's teardown (what a stop does with Kafka down: test_gateway_relay_stop.py)."""
    with running_gateway(settings, engine, kafka=DEAD_KAFKA, outbox_publish_timeout_s=1.0,
                         shutdown_relay_s=1.0) as gw:
        yield gw


def backlog(gw: Gateway) -> float:
    return gw.deps.metrics.registry.get_sample_value("lotlens_outbox_backlog_events") or 0.0


def status_of(gw: Gateway, job_id: str) -> str:
    answer = gw.get_job("/api/v1/batch-status/{job_id}", job_id)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def test_with_kafka_down_a_batch_gets_201_at_once_and_is_pending_not_a_ghost(
        gateway_without_kafka: Gateway, engine: Engine) -> None:
    gw = gateway_without_kafka
    started = time.monotonic()
    response = gw.submit(make_lots(3))
    assert response.status_code == 201, response.text
    assert time.monotonic() - started < REQUEST_TIMEOUT_S
    job_id = response.json()["job_id"]
    assert status_of(gw, job_id) == "pending"
    # The gateway wrote only its outbox: the read models are the result-store's alone.
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.job_id).where(jobs.c.job_id == job_id)).first() is None
        assert conn.execute(select(func.count()).select_from(outbox)
                            .where(outbox.c.job_id == job_id, outbox.c.published_at.is_(None))).scalar() == 4
    # The relay keeps failing meanwhile; its backlog is on /metrics.
    wait_for(lambda: backlog(gw) >= 4, lambda: f"a backlog of 4 on /metrics (it reads {backlog(gw)})",
             timeout_s=30, every_s=0.2)
    exposed = httpx2.get(f"{gw.ops_url}/metrics").text
    assert "lotlens_outbox_oldest_age_seconds" in exposed
    # And each topic's floor, per topic (`LotLensOutboxFloorHeldBack`).
    for topic in (gw.deps.settings.topics.submissions, gw.deps.settings.topics.completions):
        for gauge in ("lotlens_outbox_floor_lag_ids", "lotlens_outbox_floor_held_seconds"):
            assert f'{gauge}{{topic="{topic}"}}' in exposed


def test_cancel_is_read_your_writes_for_the_job_and_every_unfinished_lot(
        gateway_without_kafka: Gateway) -> None:
    gw = gateway_without_kafka
    lot_list = make_lots(3)
    job_id = gw.submit(lot_list).json()["job_id"]
    cancel = gw.cancel(job_id)
    assert cancel.status_code == 200, cancel.text
    assert status_of(gw, job_id) == "cancelled"
    results = gw.get_job("/api/v1/batch-results/{job_id}", job_id)
    assert results.status_code == 200, results.text
    found = results.json()["results"]["lots"]
    assert [lot["lot_id"] for lot in found] == [lot["lot_id"] for lot in lot_list]
    assert {lot["status"] for lot in found} == {"cancelled"}
    again = gw.cancel(job_id)
    assert again.status_code == 400 and again.json()["status"] == "cancelled"


def test_after_a_cancel_the_job_list_and_the_lot_pages_say_cancelled_too(
        gateway_without_kafka: Gateway, engine: Engine) -> None:
    # The contract: after a 200 from cancel, status reads `cancelled` at once, and every unfinished
    # lot `cancelled`. Status and results did; the job list and the lot pages read the projected
    # rows alone, and said `processing` until the result-store projected the cancellation (never,
    # while Kafka is down).
    gw = gateway_without_kafka
    job_id = insert_running_job(engine, gw.client_id, total_lots=3)
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": f"l{i}", "seq": i, "status": status}
                                    for i, status in enumerate(["completed", "processing", "pending"])])
    cancel = gw.cancel(job_id)
    assert cancel.status_code == 200, cancel.text

    def listed(query: str) -> dict[str, str]:
        answer = gw.list_jobs(query)
        assert answer.status_code == 200, answer.text
        return {job["job_id"]: job["status"] for job in answer.json()["jobs"]}

    assert listed("")[job_id] == "cancelled"
    assert job_id in listed("status=cancelled")
    assert job_id not in listed("status=processing")
    page = gw.get_job("/api/v1/batch-jobs/{job_id}/lots", job_id).json()
    assert page["status"] == "cancelled"
    assert [(lot["lot_id"], lot["status"]) for lot in page["lots"]] == [
        ("l0", "completed"), ("l1", "cancelled"), ("l2", "cancelled")]
    only_cancelled = gw.get_job("/api/v1/batch-jobs/{job_id}/lots?status=cancelled", job_id).json()
    assert [lot["lot_id"] for lot in only_cancelled["lots"]] == ["l1", "l2"]
    assert only_cancelled["pagination"]["total"] == 2
    assert gw.get_job("/api/v1/batch-jobs/{job_id}/lots?status=processing", job_id).json()["lots"] == []


def test_cancel_then_an_immediate_status_says_cancelled_with_kafka_up(gateway: Gateway) -> None:
    job_id = gateway.submit(make_lots(2)).json()["job_id"]
    cancel = gateway.cancel(job_id)
    assert cancel.status_code == 200, cancel.text
    assert status_of(gateway, job_id) == "cancelled"


def test_with_postgresql_down_the_answer_is_503_with_retry_after_at_once(
        settings: ServiceSettings) -> None:
    dead = create_engine(f"postgresql+psycopg2://lotlens:lotlens@127.0.0.1:{free_port()}/lotlens",
                         connect_args={"connect_timeout": 3})
    with running_gateway(settings, dead) as gw:
        started = time.monotonic()
        response = gw.submit(make_lots(2))
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "SERVICE_UNAVAILABLE"
        assert int(response.headers["retry-after"]) > 0
        assert time.monotonic() - started < REQUEST_TIMEOUT_S
    # Read to its end once the gateway has stopped: a count within a few seconds passed on a slow
    # group join whatever had been published.
    assert read_to_end(settings.kafka.bootstrap_servers, settings.topics.submissions) == []


def test_a_lot_too_big_for_one_kafka_message_is_413_naming_it_and_nothing_is_written(
        gateway: Gateway, settings: ServiceSettings, engine: Engine) -> None:
    lot_list = make_lots(3)
    lot_list[1]["additional_info"] = "x" * 10_600_000
    response = gateway.submit(lot_list)
    assert response.status_code == 413, response.text[:500]
    body = response.json()
    assert body["code"] == "LOT_TOO_LARGE" and body["details"]["lot_id"] == lot_list[1]["lot_id"]
    assert lot_list[1]["lot_id"] in body["message"]
    with engine.connect() as conn:
        pattern = f"%{lot_list[0]['lot_id']}%"
        assert conn.execute(select(outbox.c.id).where(outbox.c.payload.like(pattern))).first() is None
    assert read_to_end(settings.kafka.bootstrap_servers, settings.topics.submissions) == []


def _jobs_events(client_id: str, count: int, lots_each: int) -> list[list[Envelope]]:
    made = []
    now = datetime.now(UTC)
    for _ in range(count):
        job_id = new_id("job-")
        head = Envelope(JobSubmitted(job_id=job_id, client_id=client_id, api_version="1.0.0",
                                     languages=("en",), total_lots=lots_each, webhook_urls=(),
                                     created_at=now, estimated_completion=now), client_id=client_id)
        lots_events = [Envelope(LotSubmitted(job_id=job_id, lot_id=f"{job_id}-{i}", seq=i,
                                             total_lots=lots_each, additional_info="", image_urls=(),
                                             languages=("en",)),
                                client_id=client_id) for i in range(lots_each)]
        made.append([head, *lots_events])
    return made


def test_appended_rows_hold_exactly_the_bytes_the_relay_will_publish(
        settings: ServiceSettings, engine: Engine) -> None:
    # COPY's text format gives tab, newline, CR and backslash a meaning of their own.
    ((head, lot),) = _jobs_events("copy-test\tclient", 1, 1)
    info = 'tab\t, newline\n, CR\r, \\N, "quoted", \u00e9\U0001f697'
    awkward = replace(lot, event=lot.event.model_copy(
        update={"lot_id": "lot\\0\t1", "additional_info": info}))
    Outbox(engine, GatewayMetrics(), 1_000_000).append(settings.topics.submissions, [head, awkward])
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.client_id, outbox.c.payload)
                            .where(outbox.c.job_id == head.job_id).order_by(outbox.c.id)).all()
    assert [(client, payload.encode()) for client, payload in rows] == [
        ("copy-test\tclient", encode(head)), ("copy-test\tclient", encode(awkward))]
    assert decode(rows[1][1].encode()).event == awkward.event


def test_a_relay_killed_between_publishing_and_marking_publishes_again_and_loses_nothing(
        settings: ServiceSettings, engine: Engine) -> None:
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    store = Outbox(engine, metrics, 1_000_000)
    events = _jobs_events("relay-test", 2, 5)
    for job in events:
        store.append(topic, job)
    producer = EventProducer(settings.kafka, "relay-test")
    crashing = Relay(engine, producer, [topic], RelaySettings(), metrics)

    def crash(*_args: object) -> None:
        raise KeyboardInterrupt("killed before marking")

    crashing._mark = crash  # type: ignore[method-assign, assignment]
    with pytest.raises(KeyboardInterrupt):
        crashing.run_round()
    survivor = Relay(engine, EventProducer(settings.kafka, "relay-test-2"), [topic], RelaySettings(), metrics)
    assert survivor.run_round() == DRAINED
    seen = consume(settings.kafka.bootstrap_servers, topic, 24, timeout_s=20)
    ids = [envelope.event_id for _, envelope in seen]
    expected = [envelope.event_id for job in events for envelope in job]
    assert sorted(ids) == sorted(expected * 2)  # every event twice: duplicates, no loss
    with engine.connect() as conn:
        waiting = conn.execute(select(func.count()).select_from(outbox)
                               .where(outbox.c.topic == topic, outbox.c.published_at.is_(None))).scalar()
    assert waiting == 0


def test_two_relays_publish_every_event_and_each_job_in_order(
        settings: ServiceSettings, engine: Engine) -> None:
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    store = Outbox(engine, metrics, 1_000_000)
    relays = [Relay(engine, EventProducer(settings.kafka, f"relay-{n}"), [topic],
                    RelaySettings(batch_rows=7, retry_s=0.01, sweep_s=0.01), metrics) for n in range(2)]
    for relay in relays:
        relay.start()
    events = _jobs_events("two-relays", 12, 15)
    writers = [threading.Thread(target=store.append, args=(topic, job)) for job in events]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    total = sum(len(job) for job in events)
    seen = consume(settings.kafka.bootstrap_servers, topic, total, timeout_s=60)
    for relay in relays:
        relay.stop()
    by_job: dict[str, list[str]] = {}
    for key, envelope in seen:
        assert key == envelope.job_id.encode()
        by_job.setdefault(envelope.job_id, []).append(envelope.event_id)
    for job in events:
        assert by_job[job[0].job_id] == [envelope.event_id for envelope in job]


def test_the_backlog_is_counted_about_once_a_second_however_often_the_relay_polls(
        settings: ServiceSettings, engine: Engine) -> None:
    # Counting the unpublished rows after every round was a scan per round: 5 a second when
    # idle, and one per round of a 50,000-lot drain.
    counts: list[float] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "count(*)" in statement and "outbox" in statement:
            counts.append(time.monotonic())

    metrics = GatewayMetrics()
    relay = Relay(engine, EventProducer(settings.kafka, "relay-observe"), [new_id("relay-observe-")],
                  RelaySettings(sweep_s=0.01), metrics)
    event.listen(engine, "before_cursor_execute", note)
    try:
        relay.start()
        time.sleep(3.0)
        relay.stop()
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert 2 <= len(counts) <= 5, f"{len(counts)} backlog counts in 3 s of polling every 10 ms"
    assert all(later - earlier >= 0.9 for earlier, later in pairwise(counts))
    assert metrics.registry.get_sample_value("lotlens_outbox_backlog_events") == 0


def test_an_idle_relay_reads_the_outbox_only_when_an_append_announces_rows_or_at_its_sweep(
        settings: ServiceSettings, engine: Engine) -> None:
    # It polled five times a second, and each poll of an idle outbox read every row published
    # since the last vacuum (25 ms of database CPU after a 50,000-lot job).
    topic = settings.topics.submissions
    reads: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM outbox" in statement and "published_at IS NULL" in statement and "ORDER BY" in statement:
            reads.append(statement)

    metrics = GatewayMetrics()
    relay = Relay(engine, EventProducer(settings.kafka, "relay-idle"), [topic], RelaySettings(sweep_s=60.0),
                  metrics)
    store = Outbox(engine, metrics, 1_000_000)
    store.on_append(relay.wake)
    event.listen(engine, "before_cursor_execute", note)
    try:
        relay.start()
        time.sleep(2.0)
        assert len(reads) == 1, f"{len(reads)} reads in 2 s of an idle outbox"  # the round at start
        [job] = _jobs_events("relay-idle", 1, 3)
        store.append(topic, job)
        # Published long before the 60 s sweep: the append woke the relay.
        seen = consume(settings.kafka.bootstrap_servers, topic, len(job), timeout_s=20)
        assert [envelope.event_id for _, envelope in seen] == [envelope.event_id for envelope in job]
        assert len(reads) == 2
    finally:
        relay.stop()
        event.remove(engine, "before_cursor_execute", note)


def test_rows_no_append_announced_are_relayed_by_the_sweep(settings: ServiceSettings, engine: Engine) -> None:
    # Another replica committed them and died before its round: no wake reaches this relay.
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    relay = Relay(engine, EventProducer(settings.kafka, "relay-sweep"), [topic], RelaySettings(sweep_s=0.5),
                  metrics)
    relay.start()
    try:
        [job] = _jobs_events("relay-sweep", 1, 3)
        Outbox(engine, metrics, 1_000_000).append(topic, job)
        seen = consume(settings.kafka.bootstrap_servers, topic, len(job), timeout_s=20)
        assert [envelope.event_id for _, envelope in seen] == [envelope.event_id for envelope in job]
    finally:
        relay.stop()


def test_the_round_that_finds_a_backlog_refreshes_the_statistics_a_status_poll_relies_on(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    # Found in a 50,000-lot bench run (auto_explain): right after a big submission the outbox's
    # statistics still described it as autovacuum last saw it, and reading the job's
    # `JobSubmitted` for a status poll walked every one of the job's rows (40-60 ms a poll).
    # A schema of its own: the statistics of the shared outbox depend on what earlier runs left.
    # Without the relay's ANALYZE this read all 6,001 rows in 2 of 15 runs on the shared schema
    # (its history decides the plan) and in none of 3 on a fresh one: a guard, not a reproduction.
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    with own_schema(infra, engine) as fresh:
        with fresh.begin() as conn:
            conn.execute(text("ANALYZE outbox"))  # as autovacuum left it: nothing unpublished
            # Autovacuum's own analyze, at a moment of its choosing, would hide the relay's.
            conn.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
        relay = Relay(fresh, EventProducer(settings.kafka, "relay-stats"), [topic], RelaySettings(), metrics)
        [job] = _jobs_events("stats", 1, RelaySettings().batch_rows + 1000)
        Outbox(fresh, metrics, 1_000_000).append(topic, job)
        assert relay.run_round() == FULL
        with fresh.connect() as conn:
            before = rows_read(conn, "outbox")
            facts = facts_of(conn, job[0].job_id)
            read = rows_read(conn, "outbox") - before
        assert relay.run_round() == DRAINED
    assert facts.submitted is not None and facts.submitted.event_id == job[0].event_id
    assert read <= 2, f"{read} outbox rows read to find one JobSubmitted"


def test_a_row_committed_after_a_higher_id_was_published_is_published_too(settings: ServiceSettings,
                                                                           engine: Engine) -> None:
    # Ids are taken as rows are written, not as they commit: a 50,000-lot COPY still running
    # holds lower ids than a cancel committed meanwhile. A relay that remembered only the highest
    # id it sent never looked below it again, and the big job never reached Kafka.
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    slow, quick = _jobs_events("late-commit", 2, 1)
    relay = Relay(engine, EventProducer(settings.kafka, "relay-late"), [topic], RelaySettings(), metrics)
    with engine.connect() as big_copy:
        with big_copy.begin():
            big_copy.execute(insert(outbox), [{"topic": topic, "job_id": e.job_id, "client_id": e.client_id,
                                               "event_type": e.type, "payload": encode(e).decode()}
                                              for e in slow])
            Outbox(engine, metrics, 1_000_000).append(topic, quick)  # commits first, with higher ids
            relay.run_round()
        relay.run_round()
    seen = consume(settings.kafka.bootstrap_servers, topic, len(slow) + len(quick), timeout_s=20)
    assert sorted(e.event_id for _, e in seen) == sorted(e.event_id for e in slow + quick)
    with engine.connect() as conn:
        waiting = conn.execute(select(func.count()).select_from(outbox)
                               .where(outbox.c.topic == topic, outbox.c.published_at.is_(None))).scalar()
    assert waiting == 0
