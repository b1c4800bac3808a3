"""The relay deletes published outbox rows after their retention, a few thousand at a time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, insert, select

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import jobs, outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import new_id

pytestmark = pytest.mark.integration


def test_published_rows_are_pruned_a_few_thousand_per_transaction(settings: ServiceSettings,
                                                                   engine: Engine) -> None:
    # One DELETE of a long outage's whole backlog (250,000 rows with payloads) held every replica's
    # relay: they queued on each other's row locks and none published meanwhile.
    topic = new_id("prune-")
    old = datetime.now(UTC) - timedelta(hours=2)
    job_ids = [f"{topic}-{n}" for n in range(50)]
    with engine.begin() as conn:
        # Jobs the result-store has finished: the read models hold every lot (`outbox_prune`).
        conn.execute(insert(jobs), [{"job_id": job_id, "status": "completed"} for job_id in job_ids])
        conn.execute(insert(outbox), [{"topic": topic, "job_id": job_ids[n % 50], "client_id": "c",
                                       "event_type": "LotSubmitted", "payload": "{}", "published_at": old}
                                      for n in range(12_000)])
        conn.execute(insert(outbox), [{"topic": topic, "job_id": "fresh", "client_id": "c",
                                       "event_type": "LotSubmitted", "payload": "{}"}])
    relay = Relay(engine, EventProducer(settings.kafka, "relay-prune"), [topic], RelaySettings(),
                  GatewayMetrics())
    deletes: list[int] = []
    mine = threading.get_ident()

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # This thread's only: a relay another test left running shares the session's engine.
        if threading.get_ident() == mine and statement.lstrip().upper().startswith("DELETE FROM OUTBOX"):
            deletes.append(1)

    event.listen(engine, "after_cursor_execute", count)
    try:
        assert relay.prune() == 12_000
    finally:
        event.remove(engine, "after_cursor_execute", count)
    assert len(deletes) == 3
    with engine.connect() as conn:
        left = conn.execute(select(outbox.c.job_id).where(outbox.c.topic == topic)).scalars().all()
    assert left == ["fresh"]  # unpublished rows stay whatever their age


def test_a_prune_moves_past_a_block_of_rows_it_keeps_to_the_rows_behind_it(settings: ServiceSettings,
                                                                             engine: Engine) -> None:
    # Every call began at the oldest row, and a round deleting none ended it: 6,000 rows of a job
    # the read models never hold (its lots dead-lettered) stopped the pruning of everything after.
    topic = new_id("prune-")
    older, old = (datetime.now(UTC) - timedelta(hours=hours) for hours in (3, 2))
    with engine.begin() as conn:
        conn.execute(insert(jobs), [{"job_id": f"{topic}-done", "status": "completed"}])
        conn.execute(insert(outbox), [{"topic": topic, "job_id": f"{topic}-stuck", "client_id": "c",
                                       "event_type": "LotSubmitted", "payload": "{}", "published_at": older}
                                      for _ in range(6_000)])
        conn.execute(insert(outbox), [{"topic": topic, "job_id": f"{topic}-done", "client_id": "c",
                                       "event_type": "LotSubmitted", "payload": "{}", "published_at": old}
                                      for _ in range(3_000)])
    relay = Relay(engine, EventProducer(settings.kafka, "relay-prune"), [topic], RelaySettings(),
                  GatewayMetrics())

    pruned = [relay.prune() for _ in range(3)]

    assert sum(pruned) == 3_000, pruned
    with engine.connect() as conn:
        left = conn.execute(select(outbox.c.job_id).where(outbox.c.topic == topic)).scalars().all()
    assert set(left) == {f"{topic}-stuck"} and len(left) == 6_000


def test_a_prune_passes_an_unpublished_row_and_stops_at_a_row_published_after_the_cutoff(
        settings: ServiceSettings, engine: Engine) -> None:
    # No index holds `published_at` (`outbox_prune`): rows are walked by id, an unpublished one (a
    # row Kafka refuses) is passed over, and a row published late (after an outage) holds back the
    # rows behind it until it has aged too.
    topic = new_id("prune-")
    old, recent = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(jobs), [{"job_id": f"{topic}-done", "status": "completed"}])

        def rows(name: str, count: int, published_at: datetime | None) -> list[int]:
            return list(conn.execute(insert(outbox).returning(outbox.c.id), [
                {"topic": topic, "job_id": f"{topic}-done", "client_id": "c", "event_type": name,
                 "payload": "{}", "published_at": published_at} for _ in range(count)]).scalars())

        unpublished = rows("LotSubmitted", 1, None)
        before = rows("LotSubmitted", 10, old)
        late = rows("LotSubmitted", 1, recent)
        behind = rows("LotSubmitted", 10, old)
    relay = Relay(engine, EventProducer(settings.kafka, "relay-prune"), [topic], RelaySettings(),
                  GatewayMetrics())

    def left() -> set[int]:
        with engine.connect() as conn:
            return set(conn.execute(select(outbox.c.id).where(outbox.c.topic == topic)).scalars())

    assert relay.prune() == len(before)
    assert left() == {*unpublished, *late, *behind}
    with engine.begin() as conn:  # the late row has aged too
        conn.execute(outbox.update().where(outbox.c.id == late[0]).values(published_at=old))
    assert relay.prune() == len(late) + len(behind)
    assert left() == set(unpublished)
