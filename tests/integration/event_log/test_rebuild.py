"""`projections rebuild`: jobs of every outcome go through the live result-store on a real broker
and database; the read models rebuilt from the topics equal the live ones row for row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from lotlens_common.envelope import encode
from lotlens_common.migrate import database_revisions
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store.rebuild import REBUILD_LOCK, RebuildOptions, RebuildRunning, rebuild
from lotlens_result_store.replay import FutureEventInLog, RebuildRefused
from lotlens_result_store.shadow import RETIRED, SHADOW
from tests.conftest import ROOT
from tests.integration.event_log.support import (
    assert_same_read_models,
    delivery_count,
    outcomes,
    publish_all,
    publish_webhooks,
)
from tests.integration.result_store.support import (
    JobScript,
    consuming,
    job_published,
    job_script,
    publish,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def _all_published(engine: Engine, job_ids: list[str]) -> bool:
    return all(job_published(engine, job_id) for job_id in job_ids)


def test_the_read_models_rebuilt_from_the_log_equal_the_live_ones_row_for_row(
        own_engine: Engine, own_settings: ServiceSettings, producer: EventProducer,
        publisher: EventProducer, topics: TopicSettings) -> None:
    jobs = outcomes()
    lines: list[str] = []
    with consuming(own_settings, own_engine, producer):
        publish_all(publisher, topics, jobs)
        wait_for(lambda: _all_published(own_engine, [s.job_id for s in jobs.all()]),
                 what="every JobCompleted")
        publish_webhooks(publisher, topics, jobs)
        wait_for(lambda: delivery_count(own_engine) == 3, what="the webhook deliveries")
        time.sleep(0.5)  # the consumer also takes the JobCompleted events back

        # The live result-store keeps running through the rebuild and its swap.
        result = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(batch_size=7), lines.append)
        assert result.swapped and result.skipped == 0
        assert result.events >= sum(len(s.all_events()) for s in jobs.all())
        assert any("replay:" in line and "events/s" in line for line in lines), lines
        assert_same_read_models(own_engine, "public", RETIRED)
        with own_engine.connect() as conn:
            statuses: dict[str, str] = dict(conn.execute(text("SELECT job_id, status FROM jobs")).all())
        assert [statuses[s.job_id] for s in jobs.all()] == ["completed", "completed", "failed", "cancelled"]

        # After the swap the live store writes the swapped-in tables.
        later = job_script(5, failed=[2])
        publish(publisher, topics, later)
        wait_for(lambda: job_published(own_engine, later.job_id), what="JobCompleted of the later job")

    # And what it wrote there is what a replay of the whole log gives.
    again = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(restart=True, swap=False),
                    lines.append)
    assert not again.swapped
    assert_same_read_models(own_engine, SHADOW, "public")


def test_a_rebuild_while_the_live_store_is_busy_loses_nothing(
        own_engine: Engine, own_settings: ServiceSettings, producer: EventProducer,
        publisher: EventProducer, topics: TopicSettings) -> None:
    scripts = [job_script(1500, failed=range(0, 1500, 40)) for _ in range(3)]
    with consuming(own_settings, own_engine, producer):
        publish(publisher, topics, scripts[0])
        wait_for(lambda: job_published(own_engine, scripts[0].job_id), timeout_s=60, what="the first job")
        for script in scripts[1:]:
            publish(publisher, topics, script)
        # The swap happens while the live store is still projecting the other two jobs.
        rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(lock_gap=2000), lambda _: None)
        wait_for(lambda: _all_published(own_engine, [s.job_id for s in scripts]), timeout_s=90,
                 what="every JobCompleted")
        time.sleep(0.5)
    rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(swap=False), lambda _: None)
    assert_same_read_models(own_engine, SHADOW, "public", every_table=False)


def test_an_interrupted_rebuild_resumes_where_it_stopped(
        own_engine: Engine, own_settings: ServiceSettings, own_database: str, producer: EventProducer,
        publisher: EventProducer, topics: TopicSettings, tmp_path: Path) -> None:
    script = job_script(3000, failed=range(0, 3000, 70))
    with consuming(own_settings, own_engine, producer):
        publish(publisher, topics, script)
        wait_for(lambda: job_published(own_engine, script.job_id), timeout_s=90, what="JobCompleted")
        time.sleep(0.5)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": own_settings.kafka.bootstrap_servers,
           "DATABASE_URL": own_database,
           **{f"LOTLENS_TOPIC_{name.upper()}": getattr(topics, name) for name in
              ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}}
    command = [sys.executable, "-m", "lotlens_admin", "projections", "rebuild", "--batch-size", "50"]
    log = tmp_path / "rebuild.log"

    def checkpointed() -> int:
        with own_engine.connect() as conn:
            if not conn.execute(text("SELECT to_regclass('lotlens_rebuild.rebuild_offsets')")).scalar():
                return 0
            return int(conn.execute(text("SELECT coalesce(sum(next_offset), 0) "
                                         "FROM lotlens_rebuild.rebuild_offsets")).scalar_one())

    with log.open("wb") as out:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            wait_for(lambda: checkpointed() > 500, timeout_s=60, what="the first checkpoints")
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(10)
    stopped_at = checkpointed()
    assert 0 < stopped_at < len(script.all_events()), "the rebuild finished before the kill; make it bigger"

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stderr
    replayed = int(second.stdout.split("rebuilt: ")[1].split(" events")[0])
    assert replayed < len(script.all_events()) + 10 - stopped_at + 50, (replayed, stopped_at)
    assert_same_read_models(own_engine, "public", RETIRED, every_table=False)


def _two_lots_and_an_unreadable_message(publisher: EventProducer, topics: TopicSettings) -> JobScript:
    script = job_script(2)
    publish(publisher, topics, script)
    publisher.publish_raw(topics.vision, b"k", b"\x00not json", [])
    publisher.flush()
    return script


def test_a_rebuild_stops_at_an_event_newer_than_its_code_and_skips_unreadable_ones(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer,
        topics: TopicSettings) -> None:
    script = _two_lots_and_an_unreadable_message(publisher, topics)
    done = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(swap=False), lambda _: None)
    assert done.skipped == 1
    future = orjson.dumps({"event_id": "e", "type": "JobCancelled", "version": 99, "job_id": script.job_id,
                           "occurred_at": "2026-03-01T00:00:00+00:00", "client_id": "c", "data": {}})
    publisher.publish_raw(topics.submissions, script.job_id.encode(), future, [])
    publisher.flush()
    with pytest.raises(FutureEventInLog, match="newer release that wrote it, with --restart"):
        rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
    with own_engine.connect() as conn:  # nothing swapped; the shadow keeps its progress
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
        assert conn.execute(text(f"SELECT count(*) FROM {SHADOW}.lots")).scalar_one() == 2


def test_a_rebuild_reads_fields_a_newer_release_added_and_stops_at_a_type_it_added(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer,
        topics: TopicSettings) -> None:
    # Both were skipped as `undecodable`: a rebuild by the older release recorded a newer one's
    # events as gaps (its rows lacked every event of that release) instead of stopping for the
    # newer release, as a newer version of a type does.
    script = job_script(2)
    for topic, envelopes in ((topics.submissions, script.submissions), (topics.vision, script.vision),
                             (topics.translation, script.translation)):
        for envelope in envelopes:
            doc = orjson.loads(encode(envelope))
            doc["data"]["added_by_a_newer_release"] = None
            publisher.publish_raw(topic, envelope.job_id.encode(), orjson.dumps(doc), [])
    publisher.flush()
    done = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
    assert (done.swapped, done.skipped) == (True, 0), done
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE job_id = :j"), {"j": script.job_id}
                            ).scalar_one() == "completed"

    new_type = orjson.dumps({"event_id": "e", "type": "JobRescheduled", "version": 1, "job_id": script.job_id,
                             "occurred_at": "2026-03-01T00:00:00+00:00", "client_id": "c", "data": {}})
    publisher.publish_raw(topics.submissions, script.job_id.encode(), new_type, [])
    publisher.flush()
    with pytest.raises(FutureEventInLog, match=r"JobRescheduled.*newer release that wrote it"):
        rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(restart=True), lambda _: None)


def test_a_rebuild_that_skipped_events_does_not_swap_unless_told_to(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer,
        topics: TopicSettings) -> None:
    # A skipped event is one the rebuilt tables lack (a projection that fails for every event,
    # after a migration, say, skips them all): the rebuild swapped such tables in and said 0.
    _two_lots_and_an_unreadable_message(publisher, topics)
    kept = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
    assert (kept.swapped, kept.skipped) == (False, 1) and "skipped" in (kept.unswapped or "")
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM lots")).scalar_one() == 0
    taken = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(allow_skipped=True),
                    lambda _: None)
    assert taken.swapped
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM lots")).scalar_one() == 2


def test_live_tables_that_stay_busy_past_the_lock_timeout_are_a_refusal_to_retry_not_an_outage(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer,
        topics: TopicSettings) -> None:
    # PostgreSQL's lock_timeout (LockNotAvailable) reached the admin as an OperationalError:
    # "PostgreSQL did not answer", exit 3, while it had answered that the tables stayed busy.
    publish(publisher, topics, job_script(2))
    with own_engine.connect() as busy, busy.begin():  # a long write transaction of the live store
        busy.execute(text("LOCK TABLE jobs IN ROW EXCLUSIVE MODE"))
        with pytest.raises(RebuildRefused, match=r"stayed busy.*run it again"):
            rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(lock_timeout_s=0.5),
                    lambda _: None)
    resumed = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
    assert resumed.swapped


def test_a_rebuild_that_does_not_catch_up_does_not_lock_the_live_tables(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer,
        topics: TopicSettings) -> None:
    # The log grew faster than the rounds replayed it: the rebuild locked the live tables anyway
    # and replayed the whole gap under that lock, stalling every live write for as long.
    publish(publisher, topics, job_script(3))
    publisher.flush()
    behind = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(lock_gap=0, max_rounds=1),
                     lambda _: None)
    assert not behind.swapped and "caught up" in (behind.unswapped or "")


def test_a_second_rebuild_while_one_runs_is_refused(
        own_engine: Engine, own_settings: ServiceSettings, topics: TopicSettings) -> None:
    with own_engine.connect() as running:  # the first rebuild's hold
        assert running.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": REBUILD_LOCK}).scalar_one()
        with pytest.raises(RebuildRunning):
            rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
        running.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": REBUILD_LOCK})


def test_a_rebuild_begun_before_a_migration_does_not_swap_its_older_tables_in(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer,
        topics: TopicSettings) -> None:
    # The shadow tables copy the live definitions when the rebuild begins: a migration applied
    # meanwhile (a new column) was lost at the swap, and the result-store then failed on a
    # column alembic_version said was there.
    publish(publisher, topics, job_script(2))
    publisher.flush()
    head = sorted(database_revisions(own_engine))

    def migration_lands(line: str) -> None:  # a release's migration lands while the rebuild replays
        if line.startswith("replay:") and database_revisions(own_engine) == set(head):
            with own_engine.begin() as conn:
                conn.execute(text("ALTER TABLE lots ADD COLUMN inspected_by text"))
                conn.execute(text("UPDATE alembic_version SET version_num = '0018_lots_inspected_by'"))

    kept = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), migration_lands)
    assert not kept.swapped and "--restart" in (kept.unswapped or ""), kept
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                                 "'public' AND table_name = 'lots' AND column_name = 'inspected_by'")
                            ).scalar_one() == 1
    with own_engine.begin() as conn:  # the rebuild is run again by the release that migrated
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head[0]})
    again = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(restart=True), lambda _: None)
    assert again.swapped
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT count(inspected_by) FROM lots")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM lots")).scalar_one() == 2
