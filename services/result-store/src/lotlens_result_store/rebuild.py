"""`projections rebuild`: the read models rebuilt from the record topics while the live ones serve.

1. a shadow schema with empty copies of the read models (or the one an interrupted run left);
2. replay up to the end offsets seen at start, then catch up round after round until the gap is
   under `lock_gap` events;
3. lock the live tables against writes, replay the last events, swap the tables in that same
   transaction (docs/EVENT_LOG.md says why the live result-store then carries on unharmed), and
   put back to running the jobs it settled whose cancel the gateway accepted (the replay cannot
   see the outbox; the live store holds them for their `JobCancelled`).

It does not swap, and says why, when events were skipped by this run or an earlier one it
resumed (the rebuilt tables lack them; an operator may allow it), or when the rounds did not catch
up (locking then would stall the live writes for as long as the rest takes). It does not resume a
shadow that other projection code made (`shadow_state`). One rebuild runs at a time (a PostgreSQL
advisory lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from lotlens_common.db import held_alone
from lotlens_common.migrate import database_revisions, known_revisions, release_revisions
from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_result_store.completion import unsettle_cancelled
from lotlens_result_store.replay import Position, Progress, RebuildRefused, RecordLog, replay
from lotlens_result_store.shadow import (
    RETIRED,
    create_shadow,
    drop_shadow,
    hold_migrations,
    live_schema,
    lock_live,
    schema_changed,
    shadow_exists,
    swap,
)
from lotlens_result_store.shadow_state import create_state, foreign_shadow, skipped_events


@dataclass(frozen=True)
class RebuildOptions:
    """How a rebuild runs."""

    restart: bool = False  # forget an interrupted rebuild's progress
    swap: bool = True  # False: stop once caught up, leaving the shadow tables to inspect
    batch_size: int = 2000
    # The live tables are locked only once fewer events than this are left to replay.
    lock_gap: int = 5000
    max_rounds: int = 20
    lock_timeout_s: float = 60.0
    allow_skipped: bool = False  # swap even when some events could not be projected
    # Events of a newer version than this code to skip on purpose (topic:partition:offset).
    skip: frozenset[Position] = frozenset()


@dataclass(frozen=True)
class RebuildResult:
    """What a rebuild did."""

    events: int  # replayed by this run
    skipped: int  # missing from the shadow, by this run and every earlier one it resumed
    swapped: bool
    # Why a swap that was asked for did not happen (None: swapped, or not asked for).
    unswapped: str | None = None


class RebuildRunning(RebuildRefused):
    """Another rebuild holds the lock: two at once would replay into the same shadow tables."""


class LiveTablesBusy(RebuildRefused):
    """The live read models stayed locked by other writers past the lock timeout: nothing was
    swapped, and a rerun resumes (it is PostgreSQL's answer, not an outage)."""


# SQLSTATE lock_not_available: `lock_timeout` ran out.
_LOCK_NOT_AVAILABLE = "55P03"


# The session advisory lock a rebuild holds for its whole run (any fixed bigint).
REBUILD_LOCK = 0x4C4F544C454E53


Say = Callable[[str], None]


@contextmanager
def rebuild_lock(engine: Engine) -> Iterator[None]:
    """Hold the rebuild lock for the block (on a connection of its own); `RebuildRunning` at once
    when another session holds it. Whatever changes the shadow holds it: a rebuild, dropping it."""
    with held_alone(engine, REBUILD_LOCK, RebuildRunning(
            "another rebuild is running; wait for it, or stop it and run this again to resume")):
        yield


def rebuild(engine: Engine, kafka: KafkaSettings, topics: TopicSettings, options: RebuildOptions,
            say: Say) -> RebuildResult:
    """Rebuild the read models from the record topics; see the module's docstring."""
    with rebuild_lock(engine):
        return _rebuild(engine, kafka, topics, options, say)


def _rebuild(engine: Engine, kafka: KafkaSettings, topics: TopicSettings, options: RebuildOptions,
             say: Say) -> RebuildResult:
    _refuse_another_release(engine)
    with engine.begin() as conn:
        live = live_schema(conn)
        if options.restart:
            drop_shadow(conn)
        if shadow_exists(conn):
            if foreign := foreign_shadow(conn):
                raise RebuildRefused(foreign)
            earlier = len(skipped_events(conn))
            say("resuming the rebuild an earlier run left in the shadow schema"
                + (f" ({earlier} events skipped so far)" if earlier else ""))
        else:
            create_shadow(conn, live)
            create_state(conn)
    record = RecordLog(kafka, topics.record_topics())
    events = 0

    def run(phase: str) -> Progress:
        nonlocal events
        progress = replay(engine, record, record.watermarks(), options.batch_size,
                          lambda p: say(f"{phase}: {p.line()}"), options.skip)
        events += progress.done
        return progress

    def skipped() -> int:
        with engine.connect() as conn:
            return len(skipped_events(conn))

    caught_up = False
    for round_ in range(options.max_rounds):
        progress = run("replay" if round_ == 0 else f"catch-up {round_}")
        caught_up = progress.total <= options.lock_gap
        if caught_up:
            break
    if not options.swap:
        held = skipped()
        say("caught up; the live tables were left in place (--no-swap). The next `projections rebuild` "
            "resumes this shadow and swaps it in" + (
                f" only with --allow-skipped ({held} events skipped)" if held else "")
            + "; --restart starts over, `projections status` shows it")
        return RebuildResult(events, held, swapped=False)
    if not caught_up:
        return _kept(events, skipped(), f"not caught up after {options.max_rounds} rounds (the log grows "
                     "faster than it is replayed); run it again later, it resumes", say)
    if (held := skipped()) and not options.allow_skipped:
        return _kept(events, held, _skipped(held), say)
    with engine.connect() as lock_conn, lock_conn.begin():
        say("locking the live read models against writes")
        hold_migrations(lock_conn)
        _lock_live(lock_conn, live, options.lock_timeout_s)
        run("final")  # on other connections: committed before the swap, visible to whoever waited
        if (held := skipped()) and not options.allow_skipped:
            return _kept(events, held, _skipped(held), say)
        if moved := schema_changed(lock_conn, live):
            return _kept(events, held, f"a migration ran since the rebuild began ({moved}); the "
                         "rebuilt tables lack its changes: start over with --restart", say)
        swap(lock_conn, live)
        if held_back := unsettle_cancelled(lock_conn, RETIRED):
            say(f"{len(held_back)} jobs the replay settled wait for the cancel the gateway accepted")
    say(f"swapped in: {events:,} events replayed, {held} skipped; "
        f"the old tables are in schema {RETIRED}; the running result-store announces the jobs "
        "they hold finished and unannounced")
    return RebuildResult(events, held, swapped=True)


def _refuse_another_release(engine: Engine) -> None:
    """Refuse unless the database is at this release's newest migration. Mid-rollout an operator
    may exec into a pod of either release: an older one's projection writes none of the newer
    columns, and its shadow was swapped in silently (their data lost from the read models); a newer
    one's every batch failed on columns the database lacks, for hours, before the swap was refused."""
    at, ours = database_revisions(engine), release_revisions()
    if at == ours:
        return
    whose = ("a newer release's: run the rebuild from a pod of that release" if at - known_revisions()
             else "older than this release's: run it once this release's migrate Job has run, or from a "
             "pod of the release the database was migrated for")
    raise RebuildRefused(f"the database is at migration {', '.join(sorted(at)) or 'none'}, this release "
                         f"is at {', '.join(sorted(ours))}; the schema is {whose}; nothing was replayed")


def _lock_live(conn: Connection, live: str, timeout_s: float) -> None:
    try:
        lock_live(conn, live, timeout_s)
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise LiveTablesBusy(f"the live read models stayed busy (other transactions held them for "
                             f"over {timeout_s:g} s); nothing was swapped; run it again: it resumes "
                             "where this run got to") from exc


def _kept(events: int, skipped: int, why: str, say: Say) -> RebuildResult:
    say(f"not swapped: {why}; the rebuilt tables stay in schema lotlens_rebuild")
    return RebuildResult(events, skipped, swapped=False, unswapped=why)


def _skipped(count: int) -> str:
    return (f"{count} events were skipped (by this run or an earlier one it resumed; `projections "
            "status` lists them), so the rebuilt tables lack them; fix the cause and rerun with "
            "--restart, or swap anyway with --allow-skipped")
