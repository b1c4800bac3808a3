"""The relay marks rows published heap-only, and reads from a floor that never passes a row an
append still running will commit (`outbox_floor`)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import new_id
from tests.integration.gateway_support import consume

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
    job = _job("hot-test", 40)
    Outbox(engine, GatewayMetrics(), 1_000_000).append(settings.topics.submissions, job)
    with engine.begin() as conn:
        ids = conn.execute(select(outbox.c.id).where(outbox.c.job_id == job[0].job_id)).scalars().all()
        Relay._mark(conn, list(ids))
        updated, heap_only = conn.execute(text(
            "SELECT pg_stat_get_xact_tuples_updated('outbox'::regclass), "
            "pg_stat_get_xact_tuples_hot_updated('outbox'::regclass)")).one()
    assert (updated, heap_only) == (41, 41)


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
    deadline = time.monotonic() + 30
    while relay._floors[topic].below <= early_ids[1] and time.monotonic() < deadline:
        relay.run_round()
        time.sleep(0.05)
    seen = consume(settings.kafka.bootstrap_servers, topic, 62, timeout_s=10)
    assert sorted(envelope.event_id for _, envelope in seen) == sorted(e.event_id for e in early + late)
    # Once the append ended, the floor moves past its rows (the reads walk no published rows).
    assert relay._floors[topic].below > early_ids[1]
