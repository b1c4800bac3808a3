"""`lotlens-admin projections`: rebuild the read models from the event log (docs/EVENT_LOG.md)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import KafkaException
from sqlalchemy import Connection, Engine, text

from lotlens_admin.consent import add_flags, withheld
from lotlens_admin.sessions import admin_engine
from lotlens_common.settings import ServiceSettings
from lotlens_result_store.rebuild import RebuildOptions, RebuildRunning, rebuild, rebuild_lock
from lotlens_result_store.replay import RebuildRefused, checkpoint
from lotlens_result_store.shadow import RETIRED, REVISION, SHADOW, drop_retired, drop_shadow, shadow_exists
from lotlens_result_store.shadow_state import SKIPPED, projection_version, shadow_version, skipped_events

_Seen = TypeVar("_Seen")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _position(text_: str) -> str:
    if not re.fullmatch(r".+:\d+:\d+", text_):
        raise argparse.ArgumentTypeError(f"an event's TOPIC:PARTITION:OFFSET (as the rebuild printed it), "
                                         f"not {text_!r}")
    return text_


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `projections` group."""
    parser = groups.add_parser("projections", help="rebuild the read models from the event log")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "rebuild", help="replay the record topics into fresh tables and swap them in when caught up",
        description="Safe to interrupt: a rerun resumes from where the last one committed.")
    run.add_argument("--restart", action="store_true", help="forget an interrupted rebuild and start over")
    run.add_argument("--no-swap", action="store_true",
                     help="stop once caught up; the rebuilt tables stay in schema lotlens_rebuild")
    run.add_argument("--batch-size", type=_at_least_one, default=2000,
                     help="events per transaction (default 2000)")
    run.add_argument("--allow-skipped", action="store_true",
                     help="swap in even when some events could not be projected (`status` lists them)")
    run.add_argument("--skip", action="append", type=_position, default=[], metavar="TOPIC:PARTITION:OFFSET",
                     help="skip this event of a newer version than this release, on purpose (repeatable); "
                     "it counts as skipped, so the swap needs --allow-skipped")
    run.set_defaults(handler=_rebuild)
    status = commands.add_parser("status", help="the shadow of an unfinished rebuild (checkpoint, skipped "
                                 "events, projection version) and the retired tables")
    status.set_defaults(handler=_status)
    drop = commands.add_parser("drop-retired", help="drop the tables the last rebuild replaced (asks first; "
                               "--yes without a terminal)")
    add_flags(drop)
    drop.set_defaults(handler=_drop_retired)
    forget = commands.add_parser(
        "drop-shadow", help="drop the shadow tables an unfinished rebuild left (schema lotlens_rebuild); "
        "refused while a rebuild runs; the next rebuild starts over (asks first; --yes without a terminal)")
    add_flags(forget)
    forget.set_defaults(handler=_drop_shadow)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _rebuild(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    engine = admin_engine(pool_size=2, settings=settings.database)
    try:
        options = RebuildOptions(restart=args.restart, swap=not args.no_swap, batch_size=args.batch_size,
                                 allow_skipped=args.allow_skipped, skip=frozenset(args.skip))
        result = rebuild(engine, settings.kafka, settings.topics, options, _say)
    except KeyboardInterrupt:
        _say("interrupted: run the same command again to resume")
        return 130
    except RebuildRefused as exc:  # another rebuild runs, a shadow of other code, a future event
        _say(f"lotlens-admin: {exc}")
        return 1
    except KafkaException as exc:  # away past KAFKA_COMMAND_PATIENCE_S: what was replayed is kept
        reason = exc.args[0].str() if exc.args else str(exc)
        _say(f"lotlens-admin: Kafka did not answer: {reason}; run the same command again to resume")
        return 3
    finally:
        engine.dispose()
    done = "rebuilt" if result.swapped else "not swapped" if result.unswapped else "caught up"
    print(f"{done}: {result.events} events, {result.skipped} skipped")
    return 1 if result.unswapped else 0


def _drop_retired(args: argparse.Namespace) -> int:
    engine = admin_engine(pool_size=2)
    try:
        retired = _quiet_read(engine, _retired_tables)
        if not retired:
            print("no retired tables")
            return 0
        plan = (f"drop the tables the last rebuild replaced ({RETIRED}: {', '.join(retired)}), the read "
                "models as they were before it, for good")
        if (code := withheld(args, plan)) is not None:
            return code
        if not _dropped_if_unchanged(engine, _retired_tables, retired, drop_retired):
            return _changed("the retired tables are no longer the ones you agreed to drop (a rebuild "
                            "swapped in meanwhile: they are its way back now)")
    except RebuildRunning:
        return _rebuild_running()
    finally:
        engine.dispose()
    print(f"dropped the retired tables ({', '.join(retired)})")
    return 0


def _drop_shadow(args: argparse.Namespace) -> int:
    engine = admin_engine(pool_size=2)
    try:
        left = _quiet_read(engine, _shadow_state)
        if left is None:
            print("no shadow to drop (no rebuild in progress)")
            return 0
        plan = (f"drop the shadow {SHADOW} of an unfinished rebuild ({left.summary}); the next `projections "
                "rebuild` starts over")
        if (code := withheld(args, plan)) is not None:
            return code
        if not _dropped_if_unchanged(engine, _shadow_state, left, drop_shadow):
            return _changed(f"the shadow {SHADOW} is no longer the one you agreed to drop (a rebuild "
                            "resumed, finished or started over meanwhile)")
    except RebuildRunning:
        return _rebuild_running()
    finally:
        engine.dispose()
    print(f"dropped the shadow {SHADOW} of an unfinished rebuild ({left.summary}); the next `projections "
          "rebuild` starts over")
    return 0


# Asking holds no lock: held on a session idle while the operator reads, it kept every rebuild out,
# and a session cut meanwhile (idle_session_timeout, a proxy) released it unnoticed. The rebuild
# lock is taken to read (a running rebuild is refused at once) and again to drop, and what is
# dropped is what the operator was shown, or nothing.
def _quiet_read(engine: Engine, read: Callable[[Connection], _Seen]) -> _Seen:
    """What `read` sees while no rebuild runs (`RebuildRunning` while one does)."""
    with rebuild_lock(engine), engine.connect() as conn:
        return read(conn)


def _dropped_if_unchanged(engine: Engine, read: Callable[[Connection], object], agreed: object,
                          drop: Callable[[Connection], object]) -> bool:
    """Drop under the rebuild lock if `read` still sees what the operator agreed to; whether it did."""
    with rebuild_lock(engine), engine.begin() as conn:
        if read(conn) != agreed:
            return False
        drop(conn)
        return True


def _changed(what: str) -> int:
    _say(f"lotlens-admin: {what}; nothing was dropped; run it again to see what it would drop now")
    return 1


def _rebuild_running() -> int:
    _say("lotlens-admin: a rebuild is running (it holds the rebuild lock); stop it first, or let it "
         "finish; nothing was dropped")
    return 1


def _retired_tables(conn: Connection) -> dict[str, int]:
    """The retired tables by name, with their identity: a later swap retires others of the same names."""
    return dict(conn.execute(text("SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n ON "
                                  "n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind IN ('r', 'p') "
                                  "ORDER BY 1"), {"s": RETIRED}).tuples().all())


@dataclass(frozen=True)
class _Shadow:
    schema: int  # its schema's identity: a rebuild started over made another
    summary: str


def _shadow_state(conn: Connection) -> _Shadow | None:
    if not shadow_exists(conn):
        return None
    schema = conn.execute(text("SELECT oid::bigint FROM pg_namespace WHERE nspname = :s"),
                          {"s": SHADOW}).scalar_one()
    return _Shadow(int(schema), _shadow_summary(conn))


def _shadow_summary(conn: Connection) -> str:
    """How far the shadow had got, in one phrase."""
    passed = f"{sum(checkpoint(conn).values()):,} offsets passed"
    if not _exists(conn, SKIPPED):
        return passed
    return f"{passed}, {len(skipped_events(conn))} events skipped"


def _status(_args: argparse.Namespace) -> int:
    engine = admin_engine(pool_size=1)
    try:
        with engine.connect() as conn:
            lines = _shadow_lines(conn) if shadow_exists(conn) else ["no rebuild in progress (no shadow)"]
            retired = _retired_tables(conn)
    finally:
        engine.dispose()
    lines.append(f"retired tables in {RETIRED}: {', '.join(retired)} (`projections drop-retired` drops them)"
                 if retired else "no retired tables")
    print("\n".join(lines))
    return 0


def _shadow_lines(conn: Connection) -> list[str]:
    made, this = shadow_version(conn), projection_version()
    verdict = ("same as this release's: a rebuild resumes it" if made == this else
               f"this release's is {this}: a rebuild refuses it, --restart starts over")
    revision = (", ".join(conn.execute(text(f"SELECT version_num FROM {REVISION}")).scalars())
                if _exists(conn, REVISION) else "not recorded")
    offsets = checkpoint(conn)
    lines = [f"shadow {SHADOW}: made at migration {revision}; projection code {made or 'not recorded'} "
             f"({verdict})",
             f"checkpoint ({sum(offsets.values()):,} offsets passed):",
             *(f"  {topic}:{partition}  next offset {offset}"
               for (topic, partition), offset in sorted(offsets.items()))]
    # A shadow of a release before skipped events were kept has no such table (status failed on it).
    if not _exists(conn, SKIPPED):
        return [*lines, "skipped events not recorded (made by an older release)"]
    skipped = skipped_events(conn)
    return [*lines,
            f"{len(skipped)} events skipped" + (" (the swap needs --allow-skipped)" if skipped else ""),
            *(f"  {event.position}  {event.why}" for event in skipped)]


def _exists(conn: Connection, table: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None
