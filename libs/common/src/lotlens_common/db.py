"""Database engine creation, schema migration (Alembic, serialised by a session advisory lock), and the
job lock; how statements take a set of rows is `row_sets`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from psycopg2.errors import LockNotAvailable
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from lotlens_common import tracing
from lotlens_common.settings import DatabaseSettings
from lotlens_common.sql_tracing import trace_statements

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: every process that migrates takes the same lock, so two never race.
MIGRATION_LOCK = 7_311_002
# A session's `application_name` is this plus the name of the process it serves (`make_engine`).
APPLICATION_NAME_PREFIX = "lotlens-"


def make_engine(settings: DatabaseSettings, name: str, pool_size: int | None = None, autocommit: bool = False,
                connect_timeout_s: int | None = None, limits: Mapping[str, int] | None = None) -> Engine:
    """A pooled engine whose connections say which LotLens process they serve.

    `name` becomes the connections' `application_name`, `lotlens-<name>`, unless `DATABASE_URL`
    sets one: `pg_stat_activity` (and with it lock waits, long statements, connection counts) and
    the bench's PostgreSQL CPU per service then tell the services apart.

    `pool_size` (default: the settings') should cover the connections a service uses at once:
    a connection beyond it is closed when returned, and a new one costs a PostgreSQL backend.
    No ping before each use (a round trip per checkout, a tenth of a status request's time):
    after a database restart the first statement on a dead connection fails with a disconnect
    error, SQLAlchemy then drops the whole pool, and every caller already treats such errors as
    transient (the gateway answers 503, the consumers and loops retry).

    `autocommit` makes every connection run each statement on its own, for reads: psycopg2 sends
    no BEGIN and the pool's ROLLBACK on return costs nothing. Set here, once per connection:
    `execution_options(isolation_level=...)` on an engine would set and reset it on every
    checkout, a round trip each time. Server-side cursors need a transaction: not on this one.

    `connect_timeout_s` bounds a connection attempt to a database that does not answer (a
    request waiting on it should fail fast, not after the operating system's minutes).

    `limits` (`lock_timeout`, `statement_timeout` in ms, `DatabaseSettings.request_limits` or
    `worker_limits`) bound how long each statement waits for a lock and runs: past them it fails as
    an `OperationalError` (`LockNotAvailable`, `QueryCanceled`), which every caller treats as
    transient. Their `idle_in_transaction_session_timeout` ends a session left idle inside a
    transaction (its process gone silent), releasing its locks; its holder's next statement fails
    as a disconnect. None: PostgreSQL's (the role's) defaults, for migrations and operator commands.

    Every connection gets the settings' keepalives and TCP user timeout (each unless
    `DATABASE_URL` sets it): a database that vanished without closing its connections (a failover's
    old primary) fails their statements within about 30 s, as a disconnect, where a consumer or
    stage loop stuck in one waited 15 minutes or for ever (`DatabaseSettings`). The server's end of
    each session gets the same timers (`_server_timers`): a client whose host vanished
    (its node gone, a NAT entry dropped) no longer keeps its session, and the session-level locks
    it holds (a stage's shard lock), for the server's default two hours of keepalive silence.

    JSON columns are read with orjson: the standard library's decoder was a fifth of the
    vision-batcher's CPU (each claimed lot's work document). Writing keeps the standard encoder,
    which also takes integers beyond 64 bits.
    """
    extra: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    url = make_url(settings.database_url)
    connect_args: dict[str, Any] = {}
    if "application_name" not in url.query:
        connect_args["application_name"] = APPLICATION_NAME_PREFIX + name
    if connect_timeout_s is not None:
        connect_args["connect_timeout"] = connect_timeout_s
    peer = settings.dead_peer_detection()
    for parameter, value in peer.items():
        if parameter in url.query:  # the operator's, for both ends of the connection
            peer[parameter] = int(str(url.query[parameter]))
        else:
            connect_args[parameter] = value
    # hide_parameters: a failed statement's error is logged, traced and put in dead letters, and
    # its values are customers' signed image URLs and webhook tokens.
    engine = create_engine(url, pool_size=pool_size or settings.pool_size, max_overflow=10,
                           pool_pre_ping=False, future=True, json_deserializer=orjson.loads,
                           connect_args=connect_args, hide_parameters=True, **extra)
    session = {"jit": "off", **_server_timers(peer), **_in_ms(limits or {})}
    event.listen(engine, "connect", partial(_session_settings, session))
    if tracing.enabled():
        trace_statements(engine)
    return engine


def _in_ms(limits: Mapping[str, int]) -> dict[str, str]:
    return {parameter: f"{ms}ms" for parameter, ms in limits.items()}


def _server_timers(peer: Mapping[str, int]) -> dict[str, str]:
    """The client end's timers (`peer`: its libpq parameters, `DATABASE_URL`'s else the settings')
    for the server's end of the session (its `tcp_keepalives_*` and `tcp_user_timeout`)."""
    return {"tcp_keepalives_idle": f"{peer['keepalives_idle']}s",
            "tcp_keepalives_interval": f"{peer['keepalives_interval']}s",
            "tcp_keepalives_count": str(peer["keepalives_count"]),
            "tcp_user_timeout": f"{peer['tcp_user_timeout']}ms"}


def _session_settings(values: Mapping[str, str], dbapi_connection: Any, _record: Any) -> None:
    """Set `values` once per new connection, committed so the pool's rollback keeps them; not
    the `options` startup parameter, which PgBouncer and some proxies refuse. Behind a
    transaction-mode pooler, set them on the role instead (`ALTER ROLE ... SET jit = off`).

    No JIT in LotLens sessions: PostgreSQL compiles any plan estimated above `jit_above_cost`,
    and these short statements' estimates pass it on big tables (the stage's queue query spent
    264 ms of an idle tick's 286 ms compiling; a finished 50,000-lot job's usage sum 1-2 s).
    """
    cursor = dbapi_connection.cursor()
    try:  # one round trip for all of them
        cursor.execute("SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(values)),
                       [part for pair in values.items() for part in pair])
    finally:
        cursor.close()
    dbapi_connection.commit()


@dataclass(frozen=True)
class LockPatience:
    """How long a migration may queue for one table lock, and for how long it tries again.

    A migration's `ALTER TABLE` waiting behind a long reader holds every later statement on that
    table in the queue behind it: intake, polling and the stages stop while it waits. Giving up
    after `wait_s` lets them through; the migration tries again until `give_up_after_s` (inside
    the migrate Job's deadline), then fails and the Job retries it. A concurrent index build or
    drop waits without this limit (`concurrent_indexes`: its waits queue no reads or writes).

    `wait_s` stays under the services' own lock waits (`DatabaseSettings`: 3 s for a request,
    10 s for a worker), as everything they ask of the table meanwhile waits behind the migration's
    request: at 5 s, each try outlasted the gateway's 3 s, and every request touching the table
    while a long report read it was answered 503, try after try, for up to 10 minutes. At 1 s, an
    `ALTER` on a busy table (dispatcher replicas streaming lots in transactions of seconds) rarely
    found a gap that long in 10 minutes. Giving up, it names the sessions it waited behind.
    """

    wait_s: float = 2.0
    pause_s: float = 2.0
    give_up_after_s: float = 600.0


# How often a migrator waiting for another one asks for the migrations' lock again.
MIGRATION_LOCK_POLL_S = 0.5


def migrate(engine: Engine, target: str = "head", patience: LockPatience = LockPatience(),
            downgrade: bool = False) -> None:
    """Bring the schema to `target` (the newest revision); safe to call from many processes at once.

    `downgrade`: undo revisions back to `target` instead (a revision, `-1` for one step, `base`),
    each in a transaction of its own, under the same lock and lock waits (`lotlens-admin db downgrade`).
    """
    deadline = time.monotonic() + patience.give_up_after_s
    blockers: list[str] = []  # the last seen, by `_blockers_watched`
    while True:
        blockers.clear()
        try:
            _run(engine, target, patience.wait_s, blockers, downgrade)
            return
        except OperationalError as exc:
            if not isinstance(exc.orig, LockNotAvailable):
                raise
            held_by = "; ".join(blockers) or "none seen (they had ended)"
            if time.monotonic() + patience.pause_s > deadline:
                # What the SRE pauses or ends to let it through (docs/RUNBOOK.md, "A migration that
                # cannot get its lock"); the error alone said "lock timeout".
                log.error("a migration gave up after %s s of giving way for table locks; it waited "
                          "behind: %s", patience.give_up_after_s, held_by)
                raise
            log.warning("a migration waited %s s for a table lock, gave way and tries again in %s s; it "
                        "waited behind: %s", patience.wait_s, patience.pause_s, held_by)
            time.sleep(patience.pause_s)


# The sessions a backend waits behind, as the SRE finds them: each with the relation it waits for.
_BLOCKERS = text("""
SELECT coalesce(waited.relation::regclass::text, 'a lock'), holder.pid, holder.application_name,
       holder.state, coalesce(extract(epoch FROM now() - holder.xact_start), 0)
  FROM pg_stat_activity holder
  LEFT JOIN pg_locks waited ON waited.pid = :pid AND NOT waited.granted
 WHERE holder.pid = ANY(pg_blocking_pids(:pid))
""")


@contextmanager
def _blockers_watched(engine: Engine, pid: int, every_s: float, seen: list[str]) -> Iterator[None]:
    """Keep `seen` at the sessions backend `pid` last waited behind, asked every `every_s` on a
    connection of its own (once its lock wait has given way, PostgreSQL no longer says)."""
    stop = threading.Event()

    def watch() -> None:
        try:
            with engine.connect() as conn:
                while not stop.wait(every_s):
                    rows = conn.execute(_BLOCKERS, {"pid": pid}).all()
                    conn.rollback()
                    if rows:
                        seen[:] = [f"pid {holder} {name!r} on {relation} ({state}, transaction open "
                                   f"{age:.0f} s)" for relation, holder, name, state, age in rows]
        except SQLAlchemyError:  # only a better message lost; the migration says what failed it
            log.debug("could not watch the migration's lock waits", exc_info=True)

    watcher = threading.Thread(target=watch, name="migration-lock-waits", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        # Bounded: a watcher stuck connecting to a database gone quiet must not hold up a migration
        # that has finished (it is a daemon thread, and only a better message would be lost).
        watcher.join(timeout=every_s * 4)


def _run(engine: Engine, target: str, lock_wait_s: float, blockers: list[str], downgrade: bool) -> None:
    """One try: the migrations' lock for the session, then each pending migration (or each one to
    undo) in a transaction of its own (one building an index concurrently commits and works outside one)."""
    # Imported here: Alembic is a fifth of a service's start-up imports and only migrations need it
    # (a consumer restarted after a crash rejoins its group that much sooner).
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as connection:
        _take_migration_lock(connection)
        try:
            # For the session, not the transaction: it must hold in the autocommit blocks too.
            # Our own limits, whatever the role's or the URL's (a DBA's `ALTER ROLE ... SET
            # statement_timeout`, the workers' limits set on a role shared behind a pooler): they
            # cancelled a migration's statement waiting for its lock or building an index, and the
            # Job failed every retry. Lock waits are bounded here; a statement runs as long as it takes.
            connection.execute(text("SELECT set_config('lock_timeout', :t, false), "
                                    "set_config('statement_timeout', '0', false), "
                                    "set_config('idle_in_transaction_session_timeout', '0', false)"),
                               {"t": f"{int(lock_wait_s * 1000)}ms"})
            connection.commit()  # Alembic begins each migration's transaction itself
            config.attributes["connection"] = connection
            pid = connection.connection.dbapi_connection.get_backend_pid()  # type: ignore[union-attr]
            with _blockers_watched(engine, pid, lock_wait_s / 4, blockers):
                (command.downgrade if downgrade else command.upgrade)(config, target)
        finally:
            _release_migration_lock(connection)


@contextmanager
def held_alone(engine: Engine, key: int, busy: Exception) -> Iterator[None]:
    """Hold a session-level advisory lock for the block, on a connection of its own (a tool's
    one-at-a-time work: a rebuild, a dead-letter replay); raise `busy` at once if another session
    holds it."""
    with engine.connect() as held:
        if not held.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one():
            raise busy
        held.commit()
        try:
            yield
        finally:
            held.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            held.commit()


def _take_migration_lock(connection: Connection) -> None:
    """Hold the migrations' lock for the session, waiting outside any transaction for a migrator
    that has it.

    Session-level, as a concurrent index build commits between its steps. Asked again every
    `MIGRATION_LOCK_POLL_S` rather than waited for in `pg_advisory_lock`: a session blocked in a
    statement holds a snapshot, a concurrent index build of the lock's holder waits for every older
    snapshot to end, and PostgreSQL ended that deadlock by cancelling one of the two migrators.
    """
    waiting = False
    while True:
        taken = connection.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                   {"k": MIGRATION_LOCK}).scalar_one()
        connection.commit()
        if taken:
            return
        if not waiting:
            log.info("another process is migrating the schema: waiting for it")
            waiting = True
        time.sleep(MIGRATION_LOCK_POLL_S)


def _release_migration_lock(connection: Connection) -> None:
    """Give the lock back and the session its own limits, so the pooled connection is as it was; a
    connection that cannot do that is closed, which ends its session and the lock."""
    try:
        connection.rollback()
        for limit in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
            connection.execute(text(f"RESET {limit}"))
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()
    except SQLAlchemyError:
        log.warning("could not release the migrations' lock; closing the connection instead", exc_info=True)
        connection.invalidate()


def job_lock(job_id_sql: str) -> str:
    """SQL taking the transaction-scoped advisory lock of one job's read-model rows, the job's id
    given as an SQL expression: the result-store holds it while it writes the job's rows, the
    gateway while it accepts a cancel (a job cannot settle between its check and its 200)."""
    return f"pg_advisory_xact_lock(hashtext('lotlens-job:' || {job_id_sql}))"
