"""Scenario 8: `lotlens-admin projections rebuild` over everything the bench's stack has run.

Measured: the whole rebuild (shadow tables, replay of every record topic from the start with the
result-store's projection code, swap), with the live stack idle but up. Floor: reading the same
events off the topics with a bare consumer, the part no rebuild can skip.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import text

from bench.context import Context
from bench.stats import Row
from lotlens_common.db import make_engine
from lotlens_common.settings import ServiceSettings
from lotlens_result_store.rebuild import RebuildOptions, rebuild


def run(ctx: Context) -> list[Row]:
    """One rebuild and its floor."""
    ctx.wait_idle()
    settings = ServiceSettings()
    engine = make_engine(settings.database, "bench", pool_size=2)
    try:
        with engine.connect() as conn:
            lots = int(conn.execute(text("SELECT count(*) FROM lots")).scalar_one())
        floor_s, events = _read_everything(settings)
        started = time.monotonic()
        result = rebuild(engine, settings.kafka, settings.topics, RebuildOptions(restart=True),
                         lambda line: ctx.log(f"rebuild {line}"))
        elapsed = time.monotonic() - started
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS lotlens_retired CASCADE"))
    finally:
        engine.dispose()
    return [Row("8 rebuild", f"rebuild the read models of {lots:,} lots", "s", [elapsed], [floor_s],
                notes=f"{result.events:,} events replayed ({result.events / elapsed:,.0f}/s); "
                      f"floor: a bare consumer reading the {events:,} events",
                extra={"lots": lots, "events": result.events})]


def _read_everything(settings: ServiceSettings) -> tuple[float, int]:
    """Seconds a bare consumer takes to read every record topic to its end, and the events read."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "bench-rebuild-floor",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800})
    try:
        ends: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=30)
        for topic in settings.topics.record_topics():
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                if high > low:
                    ends[(topic, partition)] = high
        started, read = time.monotonic(), 0
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        while ends:
            for message in consumer.consume(2000, 1.0):
                if message.error() is None:
                    read += 1
                    key = (message.topic() or "", message.partition() or 0)
                    if (message.offset() or 0) + 1 >= ends.get(key, 0):
                        ends.pop(key, None)
        return time.monotonic() - started, read
    finally:
        consumer.close()
