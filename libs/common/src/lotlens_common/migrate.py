"""`python -m lotlens_common.migrate`: apply migrations and create the Kafka topics.

With `--wait` it changes nothing and returns once the schema is at (or past) the newest revision and every
topic exists with its partitions: the services' init container, so that a pod started before the
migrate Job finished waits instead of crash-looping.
"""

from __future__ import annotations

import argparse
import logging
import time

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from lotlens_common.db import MIGRATIONS, make_engine, migrate
from lotlens_common.service import setup_logging
from lotlens_common.settings import KafkaSettings, ServiceSettings, TopicSettings
from lotlens_common.topics import ensure_topics

log = logging.getLogger("lotlens_common.migrate")
WAIT_POLL_S = 5.0
RETRY_FOR_S = 120.0


def schema_current(engine: Engine) -> bool:
    """The database is at this image's newest migration, or past it: at a revision this image does
    not know, which a newer release's migrate Job wrote. Such a schema runs this image's pods
    already (they keep running through a rollout), and waiting on it hung a rollback in Init."""
    current = database_revisions(engine)
    return current == release_revisions() or bool(current - known_revisions())


def release_revisions() -> set[str]:
    """This image's newest migration revisions (its heads)."""
    return set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def known_revisions() -> set[str]:
    """Every migration revision this image has."""
    return {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}


def database_revisions(engine: Engine) -> set[str]:
    """The revisions the database's schema is at (`alembic_version`)."""
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def topics_ready(kafka: KafkaSettings, topics: TopicSettings) -> bool:
    """Every pipeline topic exists with at least its configured partitions."""
    existing = AdminClient(kafka.client_config()).list_topics(timeout=10).topics
    return all(name in existing and len(existing[name].partitions) >= topics.partitions
               for name in topics.all_topics())


def wait_until_prepared(settings: ServiceSettings, poll_s: float = WAIT_POLL_S) -> None:
    """Block until the migrate Job's work is visible (never fails: dependencies may come later)."""
    engine = make_engine(settings.database, "migrate")
    try:
        while True:
            try:
                schema = schema_current(engine)
                topics = topics_ready(settings.kafka, settings.topics)
            except Exception as exc:  # a dependency not up yet is a reason to wait, not to crash
                log.info("waiting for PostgreSQL and Kafka: %s", exc)
            else:
                if schema and topics:
                    return
                log.info("waiting for the migrate Job: schema %s, topics %s",
                         "current" if schema else "behind", "ready" if topics else "missing")
            time.sleep(poll_s)
    finally:
        engine.dispose()


def main() -> None:
    """Prepare PostgreSQL and Kafka for the services (idempotent), or wait for that (`--wait`)."""
    parser = argparse.ArgumentParser(prog="python -m lotlens_common.migrate")
    parser.add_argument("--wait", action="store_true",
                        help="change nothing; return once the schema is current and the topics exist")
    parser.add_argument("--retry-for", type=float, default=RETRY_FOR_S, metavar="S",
                        help="keep trying while PostgreSQL or Kafka cannot be reached, for up to S seconds")
    parser.add_argument("--retry-interval", type=float, default=WAIT_POLL_S, metavar="S",
                        help=argparse.SUPPRESS)  # tests wait less
    args = parser.parse_args()
    settings = ServiceSettings()
    setup_logging(settings.log_level)
    if args.wait:
        wait_until_prepared(settings, args.retry_interval)
        return
    deadline = time.monotonic() + args.retry_for
    while True:
        try:
            prepare(settings)
            return
        except (OperationalError, InterfaceError, KafkaException) as exc:
            if not not_reachable(exc) or time.monotonic() + args.retry_interval > deadline:
                raise
            log.warning("PostgreSQL or Kafka not reachable yet (%s); trying again in %g s",
                        exc, args.retry_interval)
            time.sleep(args.retry_interval)


# What PostgreSQL answers while it starts, stops or is full: worth another try. Any other FATAL
# at connect (a wrong password, a missing database) is a setting to fix, not to wait out.
_PG_NOT_READY = ("the database system is starting up", "the database system is shutting down",
                 "the database system is in recovery mode", "too many clients", "remaining connection slots")
_KAFKA_NOT_READY = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
                    KafkaError._RESOLVE, KafkaError.BROKER_NOT_AVAILABLE, KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.NOT_CONTROLLER, KafkaError.REQUEST_TIMED_OUT}


def not_reachable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL or Kafka cannot be reached (yet), rather than refused the work.

    psycopg2 gives connection failures no SQLSTATE: a server's refusal at connect is told by its
    "FATAL:" text, a network failure (refused, timed out, name not resolved) by having none."""
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        return isinstance(error, KafkaError) and error.code() in _KAFKA_NOT_READY
    pgcode = str(getattr(getattr(exc, "orig", None), "pgcode", None) or "")
    if pgcode:
        return pgcode.startswith("08") or pgcode in ("57P01", "57P02", "57P03", "53300")
    text = str(exc)
    return "FATAL:" not in text or any(reason in text for reason in _PG_NOT_READY)


def prepare(settings: ServiceSettings) -> None:
    """Apply the migrations and create the topics (both idempotent, so a failed try is tried again).

    `main` tries again while a dependency cannot be reached: compose runs it once (`restart: "no"`)
    as soon as both containers report healthy, and a PostgreSQL restarting after its init scripts
    refused the first connection, failing every service waiting on the migration's success. (The
    Kubernetes Job retries by its `backoffLimit` too.)"""
    engine = make_engine(settings.database, "migrate")
    try:
        migrate(engine)
    finally:
        engine.dispose()
    ensure_topics(settings.kafka, settings.topics)


if __name__ == "__main__":
    main()
