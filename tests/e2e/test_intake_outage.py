"""The broker stopped for 32 s during 20 submissions: every 201 job completes once, nothing else runs.

32 s outlasts what an outage used to break: a request waiting on Kafka (30 s each), the producer
given up as stalled (two waits, 20 s), a consumer's session (6 s here, 10 s by default).

The stack runs on a private broker (`tests/private_kafka.py`), so stopping it disturbs no other test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, func, select

from lotlens_common.events import JobCompleted
from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_common.signing import sign
from lotlens_common.tables import descriptions, jobs, lots, stage_lots
from lotlens_common.topics import ensure_topics
from tests.conftest import Infra, new_id
from tests.e2e.harness import Stack
from tests.events import read_to_end
from tests.polling import wait_for
from tests.private_kafka import PrivateKafka, private_kafka

pytestmark = pytest.mark.e2e

SUBMISSIONS = 20
OUTAGE_S = 32.0
# The gateway must answer well within what a client waits for (the old code took 30 s per request).
REQUEST_TIMEOUT_S = 25.0
LANGUAGES = ["en", "de"]


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[PrivateKafka]:
    """A broker of this test's own."""
    with private_kafka(tmp_path / "kafka") as running:
        yield running


@pytest.fixture()
def outage_stack(infra: Infra, broker: PrivateKafka, stack_engine: Engine, tmp_path: Path) -> Iterator[Stack]:
    """The whole stack on the private broker, with the stand-in keeping its files for inspection."""
    topics = TopicSettings.model_validate({**{name: f"outage.{name}" for name in (
        "submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}, "partitions": 3})
    ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), topics)
    running = Stack(infra=Infra(broker.bootstrap, infra.database_url), topics=topics, logs=tmp_path,
                    database_url=stack_engine.url.render_as_string(hide_password=False),
                    extra_env={"STANDIN_DATA_DIR": str(tmp_path / "standin"),
                               "LOTLENS_RATE_LIMIT_BATCH": "1000"})
    try:
        running.up()
        yield running
    finally:
        running.down()


def submit(stack: Stack, lot_list: list[dict[str, Any]]) -> tuple[httpx2.Response, float]:
    signature = sign(stack.client_key, json.dumps(lot_list, separators=(",", ":"), sort_keys=True).encode())
    body = {"signature": signature, "languages": LANGUAGES, "lots": lot_list}
    started = time.monotonic()
    answer = httpx2.post(f"{stack.url}/api/v1/generate-descriptions", json=body, timeout=120)
    return answer, time.monotonic() - started


def two_lots(images: str, prefix: str) -> list[dict[str, Any]]:
    return [{"lot_id": f"{prefix}-{i}", "additional_info": f"Car {i}",
             "images": [{"url": f"{images}/{prefix}-{i}.png"}]} for i in range(2)]


def status(stack: Stack, job_id: str) -> str:
    answer = httpx2.get(f"{stack.url}/api/v1/batch-status/{job_id}",
                       headers={"X-Signature": sign(stack.client_key, job_id.encode())}, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def completions(bootstrap: str, topic: str, engine: Engine, expected: list[str],
                timeout_s: float = 60.0) -> list[str]:
    """Job ids of every JobCompleted on the topic, read to its end once every expected job's
    announcement is acknowledged (`jobs.completion_published`): a copy sent again by a round whose
    acknowledgement timed out went out before that flag, so it is counted. (Read at the first
    end holding every id instead, a copy landing later passed as none.)"""
    def acknowledged() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(
                jobs.c.job_id.in_(expected), jobs.c.completion_published)).scalar_one())

    wait_for(lambda: acknowledged() == len(expected),
             lambda: f"every announcement acknowledged ({acknowledged()} of {len(expected)})",
             timeout_s=timeout_s, every_s=0.5)
    return [envelope.job_id for envelope in read_to_end(bootstrap, topic)
            if isinstance(envelope.event, JobCompleted)]


def test_kafka_stopped_for_32_s_during_20_submissions_loses_nothing_and_runs_nothing_refused(
        outage_stack: Stack, broker: PrivateKafka, stack_engine: Engine, images: str, tmp_path: Path) -> None:
    stack = outage_stack
    accepted: list[str] = []
    waits: list[float] = []
    def cut_and_restore() -> None:
        broker.stop()
        time.sleep(OUTAGE_S)
        broker.start()

    outage = threading.Thread(target=cut_and_restore)
    refused_prefix = new_id("refused")
    for n in range(SUBMISSIONS):
        if n == 5:
            outage.start()
        if n == 8:  # refused while the broker is down: a lot too big for one event
            too_big = two_lots(images, refused_prefix)
            too_big[1]["additional_info"] = "x" * 10_600_000
            answer, _ = submit(stack, too_big)
            assert answer.status_code == 413, answer.text[:300]
        answer, waited = submit(stack, two_lots(images, new_id(f"lot{n}")))
        assert answer.status_code == 201, answer.text
        accepted.append(answer.json()["job_id"])
        waits.append(waited)
        # Visible at once, broker or not: `pending` from the outbox, or further on already when
        # the broker is up and the stages quick (a CI run read `processing` here).
        assert status(stack, accepted[-1]) in ("pending", "processing", "translating", "completed")
        time.sleep(2.0 if 5 <= n < 15 else 0.1)
    outage.join()
    assert max(waits) < REQUEST_TIMEOUT_S, waits

    pending = set(accepted)

    def all_completed() -> bool:
        pending.difference_update([job for job in list(pending) if status(stack, job) == "completed"])
        return not pending

    wait_for(all_completed, lambda: f"every job to complete ({len(pending)} did not): "
             f"{stack.log_tail('gateway')}", timeout_s=300, every_s=1.0)

    with stack_engine.connect() as conn:
        rows = conn.execute(select(jobs.c.job_id, jobs.c.processed_lots, jobs.c.failed_lots,
                                   jobs.c.total_lots).where(jobs.c.job_id.in_(accepted))).all()
        assert sorted(r.job_id for r in rows) == sorted(accepted)
        assert all((r.processed_lots, r.failed_lots, r.total_lots) == (2, 0, 2) for r in rows)
        lot_count = conn.execute(select(func.count()).select_from(lots).where(lots.c.job_id.in_(accepted)))
        assert lot_count.scalar() == 2 * SUBMISSIONS
        text_count = conn.execute(select(func.count()).select_from(descriptions)
                                  .where(descriptions.c.job_id.in_(accepted)))
        assert text_count.scalar() == 2 * SUBMISSIONS * len(LANGUAGES)
        refused = f"{refused_prefix}%"
        assert conn.execute(select(lots.c.lot_id).where(lots.c.lot_id.like(refused))).first() is None
        staged = conn.execute(select(stage_lots.c.lot_id).where(stage_lots.c.lot_id.like(refused)))
        assert staged.first() is None
        assert conn.execute(select(func.count()).select_from(jobs)).scalar() == SUBMISSIONS

    announced = completions(broker.bootstrap, stack.topics.completions, stack_engine, accepted)
    assert sorted(announced) == sorted(accepted)  # each job announced exactly once
    # Nothing of the refused lot reached a stage (above), so nothing of it was sent to the model;
    # every batch file of the accepted jobs is deleted at the stand-in once collected.
    kept = [p for p in (tmp_path / "standin").rglob("blob-*") if p.is_file()]
    assert kept == [], kept
