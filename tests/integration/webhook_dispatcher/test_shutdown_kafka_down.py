"""A dispatcher stopped while Kafka does not answer: it exits cleanly with one line, and what it could
not publish is in PostgreSQL for the next instance to publish. A private broker, frozen (SIGSTOP) as
the webhook is answered, so the attempt's events are sent and never acknowledged, as in a broker
hang or a network partition."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookAttempted
from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_common.topics import ensure_topics
from lotlens_webhook_dispatcher import dispatch_queue as schedule
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.admin_support import TOPIC_NAMES
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    Request,
    WebhookEvents,
    client_secret,
    dispatcher_settings,
    insert_finished_job,
    of,
    queue_rows,
    receiver,
    running,
    start_process,
)
from tests.polling import wait_for
from tests.private_kafka import private_kafka

pytestmark = pytest.mark.integration


def test_a_dispatcher_stopped_while_kafka_is_down_exits_cleanly_and_loses_nothing(config, db, tmp_path: Path):
    # The last flush raised PublishError: a traceback, exit 1, the other producer's flush and the
    # engine's disposal skipped, and 30 s more of the pod's grace spent on a broker that was gone.
    log = tmp_path / "dispatcher.log"
    with private_kafka(tmp_path / "kafka") as broker:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        topics = TopicSettings.model_validate({**{n: f"{prefix}.{n}" for n in TOPIC_NAMES}, "partitions": 1})
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, consume_batch_timeout_s=0.05)
        ensure_topics(kafka, topics)
        settings = config.model_copy(update={"kafka": kafka, "topics": topics})

        def frozen_first(request: Request) -> Reply:
            if request.path == "/down" and broker.process is not None and not frozen:
                frozen.append(True)
                broker.process.send_signal(signal.SIGSTOP)
            return Reply(200)

        frozen: list[bool] = []
        with receiver(frozen_first) as hooks:
            client_secret(db)
            process = start_process(settings, new_id("g-"), log)
            try:
                # A first webhook recorded while the broker answers: the producer is connected, so
                # the next one's events are sent, not left queued.
                warm = _scheduled(db, f"{hooks.url}/warm")
                wait_for(lambda: queue_rows(db, warm)[0]["status"] == "delivered", "the warm-up delivered",
                         timeout_s=60)
                url = f"{hooks.url}/down"
                job_id = _scheduled(db, url)
                wait_for(lambda: hooks.succeeded("/down"), "the webhook answered 2xx", timeout_s=60)
                time.sleep(1.0)  # its outcome waits for Kafka
                stopping = time.monotonic()
                process.send_signal(signal.SIGTERM)
                code = process.wait(150)
                stopped_in = time.monotonic() - stopping
            finally:
                if process.poll() is None:
                    process.kill()
            said = log.read_text()
            uncaught = [line for line in said.splitlines() if line.startswith("Traceback")]
            assert code == 0 and not uncaught, said[-3000:]
            assert said.count("stopping with events unacknowledged by Kafka") == 1, said[-3000:]
            assert stopped_in < 60, f"stopping took {stopped_in:.0f} s"
            # Its attempt is left marked to its lease: the next instance records it as interrupted.
            [row] = queue_rows(db, job_id)
            assert (row["status"], row["attempt_count"], row["post_started"]) == ("sending", 1, True)

            broker.kill()  # what the frozen broker had not read yet goes with it
            broker.start()
            events = WebhookEvents(settings)
            try:
                with running(dispatcher_settings(settings, new_id("g-")), db):
                    seen = events.until(lambda seen: any((e.attempt, e.succeeded) == (2, True)
                                                         for e in of(WebhookAttempted, seen, url)),
                                        timeout_s=60)
            finally:
                events.close()
    # The next instance cannot know whether attempt 1 was sent, so it records it as interrupted and
    # sends again (at least once: receivers dedupe by `webhook-id`). If the broker had read attempt
    # 1's outcome just before it froze, that record is on the topic too: nothing lost either way.
    recorded = [(e.attempt, e.succeeded, e.error or "") for e in of(WebhookAttempted, seen, url)]
    interrupted = [(attempt, ok) for attempt, ok, error in recorded if error.startswith("interrupted")]
    assert interrupted == [(1, False)], recorded
    assert sorted((attempt, ok) for attempt, ok, _ in recorded) in (
        [(1, False), (2, True)], [(1, False), (1, True), (2, True)]), recorded


def _scheduled(db, url: str) -> str:
    """A finished job with one webhook, scheduled as the consumer schedules it on JobCompleted."""
    job_id = insert_finished_job(db, [url])
    with db.begin() as conn:
        schedule.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
    return job_id
