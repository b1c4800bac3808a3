"""The result-store through Kafka with the real consumer loop, in a thread or as the service's own
process: poison messages, a 5,000-lot job, two instances, SIGKILL and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import (
    LotSubmitted,
)
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_common.tables import (
    lots,
)
from tests.conftest import ROOT, Infra, new_id
from tests.integration.result_store.support import (
    LANGUAGES,
    assert_job_finished,
    completions,
    consuming,
    count,
    job_published,
    job_script,
    lot_rows,
    publish,
    read_topic,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration




# --- through Kafka ---

def test_a_job_through_kafka_survives_poison_messages_duplicates_and_disorder(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3, failed=[0])
    key = script.job_id.encode()
    poison = Envelope(client_id=script.client_id, event=LotSubmitted(
        job_id=script.job_id, lot_id="poison", seq=2**40, total_lots=3, additional_info="",
        image_urls=(), languages=LANGUAGES))  # seq does not fit the column: the insert raises
    # Same key, so the same partition: the events behind the bad ones must still be applied.
    publisher.publish_many(topics.translation, script.translation * 2)
    publisher.publish_many(topics.vision, script.vision)
    publisher.publish(topics.submissions, script.submissions[0])
    publisher.publish_raw(topics.submissions, key, b"\x00not json", [])
    publisher.publish(topics.submissions, poison)
    publisher.publish_many(topics.submissions, script.submissions[1:] + script.submissions)
    publisher.publish_many(topics.vision, script.vision)
    publisher.flush()

    with consuming(settings, engine, producer):
        wait_for(lambda: job_published(engine, script.job_id), what="JobCompleted")
        assert_job_finished(engine, script)
    assert "poison" not in lot_rows(engine, script.job_id)
    dead = read_topic(infra, topics.dead_letter)
    assert len(dead) == 2
    assert all(dict(m.headers() or [])["dlq.topic"] == topics.submissions.encode() for m in dead)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_five_thousand_lot_job_through_kafka(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings) -> None:
    warm_up, script = job_script(2), job_script(5000, failed=range(0, 5000, 100))
    with consuming(settings, engine, producer):
        publish(publisher, topics, warm_up)  # the consumer has joined its group once this is done
        wait_for(lambda: job_published(engine, warm_up.job_id), what="the warm-up job")
        started = time.monotonic()
        publish(publisher, topics, script)
        wait_for(lambda: job_published(engine, script.job_id), timeout_s=60, what="JobCompleted")
        elapsed = time.monotonic() - started
    assert_job_finished(engine, script)
    events = len(script.all_events())
    print(f"\nresult-store: {events} events in {elapsed:.2f}s = {events / elapsed:,.0f} events/s")
    assert len(completions(infra, topics, script.job_id)) == 1


def test_two_instances_sharing_the_partitions_count_every_lot_once_and_announce_once(
        engine: Engine, settings: ServiceSettings, publisher: EventProducer, infra: Infra,
        topics: TopicSettings) -> None:
    # A job's vision and translation partitions may belong to different instances, which then
    # write the same lot and job rows concurrently.
    scripts = [job_script(1500, failed=range(0, 1500, 30))] + [job_script(3, failed=[1]) for _ in range(6)]
    group_id = new_id("result-store-")
    first, second = (EventProducer(settings.kafka, f"result-store-{n}") for n in (1, 2))
    with consuming(settings, engine, first, group_id), consuming(settings, engine, second, group_id):
        for script in scripts:
            publish(publisher, topics, script)
        for script in scripts:
            wait_for(partial(job_published, engine, script.job_id), what=f"JobCompleted of {script.job_id}")
    for script in scripts:
        assert_job_finished(engine, script)
    announced = [decode(m.value() or b"").job_id for m in read_topic(infra, topics.completions)]
    assert sorted(announced) == sorted(script.job_id for script in scripts)


def test_a_killed_and_restarted_service_counts_every_lot_exactly_once(
        engine: Engine, infra: Infra, topics: TopicSettings, publisher: EventProducer,
        tmp_path: Path) -> None:
    scripts = [job_script(2000, failed=range(0, 2000, 50)), job_script(3)]
    for script in scripts:
        publish(publisher, topics, script)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap, "DATABASE_URL": infra.database_url,
           "KAFKA_CONSUME_BATCH_SIZE": "200",
           "LOTLENS_LOG_LEVEL": "WARNING",
           **{f"LOTLENS_TOPIC_{name.upper()}": getattr(topics, name) for name in
              ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}}

    log = tmp_path / "result-store.log"

    def start(group_id: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as stderr:
            return subprocess.Popen([sys.executable, "-m", "lotlens_result_store"], cwd=ROOT, stderr=stderr,
                                    env={**env, "LOTLENS_GROUP_ID": group_id})

    big = scripts[0].job_id
    first = start(new_id("result-store-"))
    try:
        wait_for(lambda: count(engine, lots, lots.c.job_id, big) > 0, what="the first projected lots")
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(10)
    assert not job_published(engine, big), "the job finished before the kill; make it bigger"
    # A new group replays every topic from the start over what the killed run committed (a
    # superset of resuming from its offsets, which would first wait out the dead member's
    # 45 s session timeout).
    second = start(new_id("result-store-"))
    try:
        for script in scripts:
            try:
                wait_for(partial(job_published, engine, script.job_id), timeout_s=40,
                         what=f"JobCompleted of {script.job_id}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the service said:\n{log.read_text()[-3000:]}") from None
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        second.kill()
    assert "Traceback" not in log.read_text(), log.read_text()
    for script in scripts:
        assert_job_finished(engine, script)
        announced = completions(infra, topics, script.job_id)
        assert announced, f"no JobCompleted for {script.job_id}"
        assert all(envelope.event == announced[0].event for envelope in announced)
