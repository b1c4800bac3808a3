"""`lotlens-admin projections`: rebuild the read models from the event log (docs/EVENT_LOG.md)."""

from __future__ import annotations

import argparse
import sys

from lotlens_common.db import make_engine
from lotlens_common.settings import ServiceSettings
from lotlens_result_store.rebuild import RebuildOptions, RebuildRunning, rebuild
from lotlens_result_store.shadow import drop_retired


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


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
                     help="swap in even when some events could not be projected (they are logged)")
    run.set_defaults(handler=_rebuild)
    drop = commands.add_parser("drop-retired", help="drop the tables the last rebuild replaced")
    drop.set_defaults(handler=_drop_retired)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _rebuild(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    engine = make_engine(settings.database, "admin", pool_size=2)
    try:
        options = RebuildOptions(restart=args.restart, swap=not args.no_swap, batch_size=args.batch_size,
                                 allow_skipped=args.allow_skipped)
        result = rebuild(engine, settings.kafka, settings.topics, options, _say)
    except KeyboardInterrupt:
        _say("interrupted: run the same command again to resume")
        return 130
    except RebuildRunning as exc:
        _say(f"lotlens-admin: {exc}")
        return 1
    finally:
        engine.dispose()
    done = "rebuilt" if result.swapped else "not swapped" if result.unswapped else "caught up"
    print(f"{done}: {result.events} events, {result.skipped} skipped")
    return 1 if result.unswapped else 0


def _drop_retired(_args: argparse.Namespace) -> int:
    engine = make_engine(ServiceSettings().database, "admin", pool_size=1)
    try:
        with engine.begin() as conn:
            dropped = drop_retired(conn)
    finally:
        engine.dispose()
    print("dropped the retired tables" if dropped else "no retired tables")
    return 0
