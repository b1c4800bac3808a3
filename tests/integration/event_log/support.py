"""Helpers of the rebuild tests: jobs of every outcome as the services publish them, and the
read models read back table by table for a row-for-row comparison."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    JobCancelled,
    WebhookAttempted,
    WebhookDelivered,
    WebhookFailed,
    WebhookRedeliveryRequested,
)
from lotlens_common.producer import EventProducer
from lotlens_common.settings import TopicSettings
from lotlens_common.tables import READ_MODELS
from tests.conftest import ROOT
from tests.integration.result_store.support import HOOK, JobScript, job_script, publish
from tests.polling import wait_for

# Written when a row is written, not a fact of the events: the one column a rebuild changes.
BOOKKEEPING = {"updated_at"}
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def read_models(engine: Engine, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row of a schema, without the bookkeeping columns, in key order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in READ_MODELS:
            columns = [c.name for c in table.columns if c.name not in BOOKKEEPING]
            keys = [c.name for c in table.primary_key.columns]
            rows = conn.execute(text(f"SELECT {', '.join(columns)} FROM {schema}.{table.name} "
                                     f"ORDER BY {', '.join(keys)}")).all()
            found[table.name] = [tuple(_hashable(value) for value in row) for row in rows]
    return found


def _hashable(value: Any) -> Any:
    """JSON columns (lists) as their JSON text, so rows can be compared as sets too."""
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else value


def assert_same_read_models(engine: Engine, rebuilt: str, live: str, every_table: bool = True) -> None:
    """The two schemas hold the same rows, table by table (with rows in every table, unless
    `every_table` is off)."""
    left, right = read_models(engine, rebuilt), read_models(engine, live)
    for table, rows in right.items():
        assert rows or not every_table, f"{live}.{table} is empty: the test drove nothing into it"
        missing, extra = set(rows) - set(left[table]), set(left[table]) - set(rows)
        assert not missing and not extra, f"{table}: missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}"
        assert left[table] == rows, table


@dataclass
class Outcomes:
    """Jobs of every outcome, the order they are published in."""

    completed: JobScript
    partly_failed: JobScript
    all_failed: JobScript
    cancelled: JobScript

    def all(self) -> list[JobScript]:
        """Every job."""
        return [self.completed, self.partly_failed, self.all_failed, self.cancelled]


def outcomes() -> Outcomes:
    """A completed job, one with a failed lot, one whose every lot failed, and one cancelled
    after its first lot was described (the others never are)."""
    cancelled = job_script(3)
    cancelled.vision = cancelled.vision[:2]  # the batch, then the first lot
    cancelled.translation = cancelled.translation[:2]
    cancelled.submissions.append(Envelope(client_id=cancelled.client_id, occurred_at=T0, event=JobCancelled(
        job_id=cancelled.job_id, cancelled_at=T0)))
    return Outcomes(job_script(3), job_script(4, failed=[1]), job_script(2, failed=[0, 1]), cancelled)


def publish_all(publisher: EventProducer, topics: TopicSettings, jobs: Outcomes) -> None:
    """Every job's events on their topics."""
    for script in jobs.all():
        publish(publisher, topics, script)


def publish_webhooks(publisher: EventProducer, topics: TopicSettings, jobs: Outcomes) -> None:
    """What the dispatcher publishes: the completed job's webhook fails twice and is given up,
    the client asks for a redelivery and it succeeds; the partly failed job's succeeds at once."""
    done = jobs.completed
    first, again = f"{done.job_id}-d1", f"{done.job_id}-r1"

    def attempt(job_id: str, delivery: str, n: int, ok: bool, at: datetime) -> WebhookAttempted:
        return WebhookAttempted(
            job_id=job_id, delivery_id=delivery, webhook_url=HOOK, attempt=n, attempted_at=at, succeeded=ok,
            status_code=200 if ok else 503, latency_ms=12.5, error=None if ok else "HTTP 503",
            response_body="ok" if ok else "busy", next_attempt_at=None if ok or n == 2 else at + timedelta(1))

    events = [
        attempt(done.job_id, first, 1, False, T0),
        attempt(done.job_id, first, 2, False, T0 + timedelta(minutes=1)),
        WebhookFailed(job_id=done.job_id, delivery_id=first, webhook_url=HOOK, attempts=2,
                      failed_at=T0 + timedelta(minutes=1), error="HTTP 503"),
        attempt(done.job_id, again, 1, True, T0 + timedelta(hours=1)),
        WebhookDelivered(job_id=done.job_id, delivery_id=again, webhook_url=HOOK, attempts=1,
                         delivered_at=T0 + timedelta(hours=1)),
        attempt(jobs.partly_failed.job_id, f"{jobs.partly_failed.job_id}-d1", 1, True, T0),
        WebhookDelivered(job_id=jobs.partly_failed.job_id, delivery_id=f"{jobs.partly_failed.job_id}-d1",
                         webhook_url=HOOK, attempts=1, delivered_at=T0),
    ]
    publisher.publish(topics.completions, Envelope(client_id=done.client_id, event=WebhookRedeliveryRequested(
        job_id=done.job_id, redelivery_id="r1", requested_at=T0 + timedelta(minutes=30))))
    clients = {script.job_id: script.client_id for script in jobs.all()}
    publisher.publish_many(topics.webhooks, [Envelope(client_id=clients[e.job_id], event=e) for e in events])
    publisher.flush()


def delivery_count(engine: Engine) -> int:
    """How many webhook deliveries the live read models hold."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one())


@contextmanager
def live_result_store(env: dict[str, str], log: Path, *argv: str) -> Iterator[None]:
    """`python -m lotlens_result_store` (or `python *argv`) running until the block ends, once it
    has its partitions (its start-up sweep is behind it by then)."""
    with log.open("ab") as stderr:
        process = subprocess.Popen([sys.executable, *(argv or ("-m", "lotlens_result_store"))], cwd=ROOT,
                                   stderr=stderr, env={**env, "LOTLENS_LOG_LEVEL": "INFO"})
    try:
        wait_for(lambda: "partitions assigned" in log.read_text() or process.poll() is not None,
                 timeout_s=60, what="the result-store's partitions")
        assert process.poll() is None, log.read_text()[-3000:]
        yield
    finally:
        process.terminate()
        process.wait(30)
