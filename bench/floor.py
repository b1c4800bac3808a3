"""Floors: the least any implementation must do for a scenario, with the same tools and guarantees.

Kafka producers use the project's producer settings (idempotent, acks=all, lz4, linger 5 ms) and
the job id as key; consumers are bare `Consumer.consume` loops on assigned partitions; PostgreSQL
writes are psycopg2 `COPY` into temp tables; HTTP floors use plain httpx2 at the same concurrency.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx2
import orjson
import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.config import database_dsn, kafka_bootstrap

PRODUCER = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "message.max.bytes": 10 * 1024 * 1024,
}


def producer() -> Producer:
    """A producer configured like `lotlens_common.producer.EventProducer`."""
    return Producer({"bootstrap.servers": kafka_bootstrap(), **PRODUCER})


def produce_all(prod: Producer, topic: str, key: bytes, values: Iterable[bytes]) -> None:
    """Produce every value and wait for acks=all."""
    for value in values:
        while True:
            try:
                prod.produce(topic, value=value, key=key)
                break
            except BufferError:
                prod.poll(0.05)
        prod.poll(0)
    if prod.flush(60):
        raise RuntimeError("the floor's messages were not acknowledged")


def consume_n(consumer: Consumer, count: int, timeout_s: float = 120.0) -> int:
    """Consume `count` messages (bytes returned as a checksum of the work done)."""
    seen = size = 0
    deadline = time.monotonic() + timeout_s
    while seen < count and time.monotonic() < deadline:
        for message in consumer.consume(min(count - seen, 10_000), 0.1):
            if message.error() is None:
                seen += 1
                size += len(message.value() or b"")
    if seen < count:
        raise RuntimeError(f"the floor consumed {seen} of {count} messages")
    return size


def consumer_on(topic: str, partitions: int = 6) -> Consumer:
    """A consumer assigned to every partition of a fresh topic from offset 0 (no group join)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(),
            "group.id": f"bench-floor-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return consumer


def envelope_bytes(event_type: str, job_id: str, data: dict[str, Any]) -> bytes:
    """The bytes `lotlens_common.envelope.encode` writes, built from plain dicts."""
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": event_type,
            "version": 1,
            "occurred_at": datetime.now(UTC),
            "job_id": job_id,
            "client_id": "demo",
            "trace": {},
            "data": data,
        }
    )


def _copy_text(rows: Iterable[Sequence[object]]) -> io.StringIO:
    def cell(value: object) -> str:
        if value is None:
            return "\\N"
        text = value if isinstance(value, str) else str(value)
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(cell(v) for v in row) + "\n")
    buffer.seek(0)
    return buffer


def fresh_table(conn: Any, table_sql: str, durable: bool = False) -> str:
    """An empty table (`table_sql`: `name (col type, ...)`) for `copy_rows`; its name.

    A temp table unless `durable`: then a logged one, written to the WAL like a real table.
    Made before a floor's clock starts, as LotLens's tables exist before a job (the previous
    run's table, 60 MB, was dropped inside the measurement).
    """
    name = table_sql.split("(", 1)[0].strip()
    kind = "TABLE" if durable else "TEMP TABLE"
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}; CREATE {kind} {table_sql}")
    conn.commit()
    return name


def copy_rows(conn: Any, name: str, rows: Iterable[Sequence[object]]) -> None:
    """COPY rows into a table made by `fresh_table`, and commit."""
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {name} FROM STDIN", _copy_text(rows))
    conn.commit()


def connect() -> Any:
    """A psycopg2 connection to the project's database."""
    return psycopg2.connect(database_dsn())


ONE = httpx2.Limits(max_connections=1, max_keepalive_connections=1)


async def _workers(
    concurrency: int,
    items: Sequence[Any],
    send: Callable[[httpx2.AsyncClient, Any], Awaitable[Any]],
    shared: httpx2.AsyncClient | None = None,
) -> float:
    """`concurrency` workers take items in turn; each has its own one-connection client unless
    `shared` is given. Connections are opened before the clock starts. Seconds taken."""
    clients = [shared or httpx2.AsyncClient(limits=ONE, timeout=30) for _ in range(concurrency)]
    queue = iter(items)
    try:
        if shared is None:
            await asyncio.gather(*(c.get(_origin(items[0])) for c in clients), return_exceptions=True)
        started = time.perf_counter()

        async def worker(client: httpx2.AsyncClient) -> None:
            for item in queue:
                await send(client, item)

        await asyncio.gather(*(worker(c) for c in clients))
        return time.perf_counter() - started
    finally:
        if shared is None:
            await asyncio.gather(*(c.aclose() for c in clients))


def _origin(item: Any) -> str:
    scheme, _, host = str(item[0] if isinstance(item, tuple) else item).split("/", 3)[:3]
    return f"{scheme}//{host}/"


def post_bodies(url_bodies: Sequence[tuple[str, bytes]], concurrency: int) -> float:
    """Plain httpx2: POST each body to its URL, `concurrency` at a time; seconds taken."""
    headers = {"Content-Type": "application/json"}

    async def send(client: httpx2.AsyncClient, item: tuple[str, bytes]) -> None:
        (await client.post(item[0], content=item[1], headers=headers)).raise_for_status()

    return asyncio.run(_workers(concurrency, url_bodies, send))


async def _head(client: httpx2.AsyncClient, url: str) -> None:
    (await client.head(url)).raise_for_status()


def head_urls(urls: Sequence[str], concurrency: int) -> float:
    """Plain httpx2: HEAD each URL, `concurrency` at a time, one connection per worker; seconds."""
    return asyncio.run(_workers(concurrency, urls, _head))


def head_urls_shared(urls: Sequence[str], concurrency: int) -> float:
    """Plain httpx2: the same HEADs through one client built like the vision-batcher's; seconds."""

    async def run() -> float:
        async with httpx2.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            return await _workers(concurrency, urls, _head, shared=client)

    return asyncio.run(run())
