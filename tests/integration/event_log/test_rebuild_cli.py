"""`lotlens-admin projections` run as an operator runs it (its own process, a real broker and
database): what an earlier run left in the shadow is never swapped in unseen, an event newer than
the code is one line with its position and can be skipped on purpose, `status` tells it all."""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson
import pytest
from sqlalchemy import Engine, text

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store.rebuild import REBUILD_LOCK, RebuildOptions, rebuild
from lotlens_result_store.shadow import RETIRED, SHADOW, TABLES, shadow_exists
from tests.integration.admin_support import REFUSING_KAFKA, admin_env, asking_on_a_terminal, run_admin
from tests.integration.result_store.support import JobScript, job_script, publish

pytestmark = pytest.mark.integration

Rebuilt = Callable[..., None]


@pytest.fixture()
def env(own_settings: ServiceSettings, own_database: str, topics: TopicSettings) -> dict[str, str]:
    return admin_env(own_settings.kafka.bootstrap_servers, own_database, topics)


@pytest.fixture()
def rebuilt(own_settings: ServiceSettings, own_engine: Engine, topics: TopicSettings) -> Rebuilt:
    """What a `projections rebuild` leaves, for a test's setup: run in this process, as the rebuild
    tests run it (the command's own runs are what these tests check; starting an interpreter for
    each setup cost a second)."""
    def run(swap: bool = True, allow_skipped: bool = False) -> None:
        result = rebuild(own_engine, own_settings.kafka, topics,
                         RebuildOptions(swap=swap, allow_skipped=allow_skipped), lambda _: None)
        assert result.swapped == swap, result
    return run


def _lots(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM lots")).scalar_one())


def _two_lots_and_an_unreadable_message(publisher: EventProducer, topics: TopicSettings) -> JobScript:
    script = job_script(2)
    publish(publisher, topics, script)
    publisher.publish_raw(topics.vision, b"k", b"\x00not json", [])
    publisher.flush()
    return script


def test_a_resumed_rebuild_does_not_swap_in_what_an_earlier_run_skipped(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str]) -> None:
    # The skipped count was the run's own: after a --no-swap run skipped an event, the next run
    # resumed with nothing left to replay, counted 0 skipped and swapped the gap in, exit 0.
    _two_lots_and_an_unreadable_message(publisher, topics)
    dry = run_admin(env, "projections", "rebuild", "--no-swap")
    assert dry.returncode == 0, dry.stderr[-2000:]

    kept = run_admin(env, "projections", "rebuild")
    assert kept.returncode == 1, (kept.stdout, kept.stderr[-2000:])
    assert "1 events were skipped" in kept.stderr and kept.stdout.strip().endswith("1 skipped")
    assert _lots(own_engine) == 0, "the shadow missing an event was swapped in"
    # And the dry run said what the next run would do with what it left.
    assert "next `projections rebuild` resumes" in dry.stderr and "--allow-skipped" in dry.stderr, dry.stderr

    taken = run_admin(env, "projections", "rebuild", "--allow-skipped")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert taken.stdout.strip().endswith("1 skipped") and _lots(own_engine) == 2


def test_a_shadow_projected_by_other_code_is_not_resumed(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    # The documented dry run -> deploy the projection fix -> rebuild kept the old code's rows for
    # every event before the dry run's checkpoint, and swapped them in.
    publish(publisher, topics, job_script(2))
    publisher.flush()
    rebuilt(swap=False)
    with own_engine.begin() as conn:  # what an earlier release's dry run leaves behind
        conn.execute(text(f"UPDATE {SHADOW}.rebuild_state SET projection_version = 'an-older-release'"))
    refused = run_admin(env, "projections", "rebuild")
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stderr.count("\n") == 1 and "an-older-release" in refused.stderr, refused.stderr
    assert "--restart" in refused.stderr and "Traceback" not in refused.stderr
    assert _lots(own_engine) == 0
    again = run_admin(env, "projections", "rebuild", "--restart")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _lots(own_engine) == 2


def publish_with_a_future_event(publisher: EventProducer, topics: TopicSettings) -> None:
    """A two-lot job's events, then a JobCancelled of a version newer than this code knows."""
    script = job_script(2)
    publish(publisher, topics, script)
    future = orjson.dumps({"event_id": "e", "type": "JobCancelled", "version": 99, "job_id": script.job_id,
                           "occurred_at": "2026-03-01T00:00:00+00:00", "client_id": "c", "data": {}})
    publisher.publish_raw(topics.submissions, script.job_id.encode(), future, [])
    publisher.flush()


def test_an_event_newer_than_the_code_is_one_line_with_its_position_and_can_be_skipped_on_purpose(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str]) -> None:
    # It was a 30-line traceback ending in a tuple repr of the position, and no option got past it:
    # topics are kept for good, so one rogue event blocked every rebuild for ever.
    publish_with_a_future_event(publisher, topics)
    stopped = run_admin(env, "projections", "rebuild", "--no-swap", "--allow-skipped")
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    found = re.search(rf"{re.escape(topics.submissions)}:\d+:\d+", last)
    assert found and "version 99" in last and f"--skip {found.group(0)}" in last, last

    assert run_admin(env, "projections", "rebuild", "--skip", "garbage").returncode == 2
    skipped = run_admin(env, "projections", "rebuild", "--skip", found.group(0))
    assert skipped.returncode == 1 and "1 events were skipped" in skipped.stderr, skipped.stderr[-2000:]
    assert _lots(own_engine) == 0
    taken = run_admin(env, "projections", "rebuild", "--allow-skipped")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert _lots(own_engine) == 2


def test_the_advice_for_an_event_newer_than_the_code_is_what_the_newer_release_accepts(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str]) -> None:
    # The stop said "run the rebuild with the release that wrote it" and EVENT_LOG.md "(the progress
    # is kept)"; but that release changes the event models, part of the projection version, so it
    # refuses to resume this shadow: only --restart works with it.
    publish_with_a_future_event(publisher, topics)
    stopped = run_admin(env, "projections", "rebuild", "--no-swap")
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    advice = stopped.stderr.strip().splitlines()[-1]
    assert "newer release" in advice and "--restart" in advice, advice
    with own_engine.begin() as conn:  # the newer release's projection code is another version
        conn.execute(text(f"UPDATE {SHADOW}.rebuild_state SET projection_version = 'this-release'"))
    resumed = run_admin(env, "projections", "rebuild", "--no-swap")  # what the old advice led to
    assert resumed.returncode == 1 and "--restart" in resumed.stderr, resumed.stderr[-2000:]


def test_status_shows_the_shadow_its_checkpoint_skipped_events_version_and_retired_tables(
        publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    # Nothing showed an interrupted shadow or how far it had got.
    empty = run_admin(env, "projections", "status")
    assert empty.returncode == 0, empty.stderr
    assert "no rebuild in progress" in empty.stdout and "no retired tables" in empty.stdout, empty.stdout

    _two_lots_and_an_unreadable_message(publisher, topics)
    rebuilt(swap=False)
    shown = run_admin(env, "projections", "status")
    assert shown.returncode == 0, shown.stderr
    assert "shadow lotlens_rebuild" in shown.stdout and "same as this release's" in shown.stdout, shown.stdout
    assert re.search(rf"{re.escape(topics.vision)}:\d+ +next offset \d+", shown.stdout), shown.stdout
    assert re.search(rf"1 events skipped.*\n +{re.escape(topics.vision)}:\d+:\d+ +undecodable", shown.stdout)

    rebuilt(allow_skipped=True)
    after = run_admin(env, "projections", "status").stdout
    assert "no rebuild in progress" in after and "retired tables in lotlens_retired: " in after, after


def test_status_shows_a_shadow_left_by_a_release_that_recorded_no_skipped_events(
        own_engine: Engine, topics: TopicSettings, env: dict[str, str]) -> None:
    # A shadow as `create_shadow` made it before skipped events were kept (commit 5a2872b): the
    # tables, the checkpoint and the revision, no rebuild_state or rebuild_skipped. `status` failed
    # on it (relation "lotlens_rebuild.rebuild_skipped" does not exist, exit 1).
    with own_engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {SHADOW}"))
        for table in TABLES:
            conn.execute(text(f"CREATE TABLE {SHADOW}.{table} (LIKE public.{table} INCLUDING ALL)"))
        conn.execute(text(f"CREATE TABLE {SHADOW}.rebuild_offsets (topic text NOT NULL, partition int "
                          "NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (topic, partition))"))
        conn.execute(text(f"INSERT INTO {SHADOW}.rebuild_offsets VALUES (:t, 0, 42)"), {"t": topics.vision})
        conn.execute(text(f"CREATE TABLE {SHADOW}.schema_revision AS "
                          "SELECT version_num FROM public.alembic_version"))
    shown = run_admin(env, "projections", "status")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "projection code not recorded" in shown.stdout, shown.stdout
    assert re.search(rf"{re.escape(topics.vision)}:0 +next offset 42", shown.stdout), shown.stdout
    assert "skipped events not recorded (made by an older release)" in shown.stdout, shown.stdout


def test_a_rebuild_with_kafka_down_is_one_line_on_stderr(own_engine: Engine, own_database: str,
                                                         topics: TopicSettings) -> None:
    # 581 lines of librdkafka's "Connection refused" came before the rebuild's own.
    done = run_admin(admin_env(REFUSING_KAFKA, own_database, topics), "projections", "rebuild", "--no-swap")
    lines = done.stderr.splitlines()
    assert done.returncode == 3 and len(lines) == 1, (done.returncode, len(lines), lines[:2])
    assert lines[0].startswith("lotlens-admin: Kafka did not answer")


def _shadow_exists(engine: Engine) -> bool:
    with engine.connect() as conn:
        return shadow_exists(conn)


def test_drop_shadow_drops_what_a_rebuild_left_and_says_so_once_there_is_nothing(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    # A rebuild's shadow left behind (a --no-swap run, an interrupted one) could only be dropped
    # by `rebuild --restart`, which replays the whole log again, or by hand in psql.
    _two_lots_and_an_unreadable_message(publisher, topics)
    rebuilt(swap=False)
    assert _shadow_exists(own_engine)

    unagreed = run_admin(env, "projections", "drop-shadow")  # no terminal to ask on, no --yes
    assert unagreed.returncode == 2 and _shadow_exists(own_engine), unagreed
    assert f"this would drop the shadow {SHADOW} of an unfinished rebuild" in unagreed.stderr

    dropped = run_admin(env, "projections", "drop-shadow", "--yes")

    assert dropped.returncode == 0, dropped.stderr[-2000:]
    assert not _shadow_exists(own_engine)
    [said] = dropped.stdout.splitlines()
    assert said.startswith(f"dropped the shadow {SHADOW} of an unfinished rebuild"), said
    assert "1 events skipped" in said
    assert "no rebuild in progress" in run_admin(env, "projections", "status").stdout
    assert _lots(own_engine) == 0  # the live tables untouched
    again = run_admin(env, "projections", "drop-shadow")
    assert again.returncode == 0, again
    assert again.stdout.strip() == "no shadow to drop (no rebuild in progress)"


def test_drop_shadow_is_refused_while_a_rebuild_runs(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    publish(publisher, topics, job_script(2))
    publisher.flush()
    rebuilt(swap=False)
    with own_engine.connect() as running:  # what a running rebuild holds for its whole run
        assert running.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": REBUILD_LOCK}).scalar_one()
        refused = run_admin(env, "projections", "drop-shadow")
        running.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": REBUILD_LOCK})
    assert (refused.returncode, refused.stdout) == (1, ""), refused
    [line] = refused.stderr.splitlines()
    assert line.startswith("lotlens-admin: ") and "rebuild is running" in line
    assert _shadow_exists(own_engine)


def test_drop_retired_says_what_it_drops_and_drops_only_with_a_yes(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    # It dropped the read models a rebuild replaced (the only way back from a bad one) at once,
    # with no question and no dry run, and said only "dropped the retired tables".
    publish(publisher, topics, job_script(2))
    publisher.flush()
    rebuilt()
    plan = f"drop the tables the last rebuild replaced ({RETIRED}: {', '.join(sorted(TABLES))})"

    dry = run_admin(env, "projections", "drop-retired", "--dry-run")
    assert (dry.returncode, dry.stdout.startswith(f"would {plan}")) == (0, True), dry
    unagreed = run_admin(env, "projections", "drop-retired")  # no terminal to ask on, no --yes
    assert (unagreed.returncode, unagreed.stdout) == (2, ""), unagreed
    assert unagreed.stderr.startswith(f"lotlens-admin: this would {plan}")
    assert _retired(own_engine) == sorted(TABLES)

    dropped = run_admin(env, "projections", "drop-retired", "--yes")
    assert dropped.returncode == 0 and _retired(own_engine) == [], dropped
    again = run_admin(env, "projections", "drop-retired")
    assert (again.returncode, again.stdout.strip()) == (0, "no retired tables"), again


def _retired(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"),
                                 {"s": RETIRED}).scalars())


def _retired_tables(engine: Engine) -> dict[str, int]:
    """The retired tables by name, with their identity (a later swap retires others of the same names)."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n "
                                      "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r'"),
                                 {"s": RETIRED}).tuples().all())


def test_drop_retired_drops_nothing_when_a_rebuild_swapped_while_it_asked(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    # It listed the tables, asked, then dropped whatever was retired by then, without the rebuild
    # lock: a swap during the question had it drop the read models just replaced, the only way
    # back from that rebuild.
    publish(publisher, topics, job_script(2))
    publisher.flush()
    rebuilt()
    with asking_on_a_terminal(env, "projections", "drop-retired") as answer:
        assert run_admin(env, "projections", "rebuild").returncode == 0  # another operator's
        rollback_point = _retired_tables(own_engine)
        refused = answer(b"yes\n")
    assert (refused.returncode, refused.stdout) == (1, ""), refused
    assert "nothing was dropped" in refused.stderr.splitlines()[-1], refused.stderr
    assert _retired_tables(own_engine) == rollback_point


def test_drop_shadow_asks_without_holding_off_a_rebuild_and_drops_nothing_it_changed(
        own_engine: Engine, publisher: EventProducer, topics: TopicSettings, env: dict[str, str],
        rebuilt: Rebuilt) -> None:
    # It held the rebuild lock on an idle session while it asked: a rebuild meanwhile was refused
    # (and a session cut by idle_session_timeout or a proxy dropped the lock unnoticed).
    publish(publisher, topics, job_script(2))
    publisher.flush()
    rebuilt(swap=False)
    with asking_on_a_terminal(env, "projections", "drop-shadow") as answer:
        publish(publisher, topics, job_script(1))
        publisher.flush()
        resumed = run_admin(env, "projections", "rebuild", "--no-swap")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        refused = answer(b"yes\n")
    assert (refused.returncode, refused.stdout) == (1, ""), refused
    assert "nothing was dropped" in refused.stderr.splitlines()[-1], refused.stderr
    assert _shadow_exists(own_engine)
