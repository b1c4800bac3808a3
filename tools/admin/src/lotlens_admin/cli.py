"""The `lotlens-admin` command line: one sub-command group per operator concern.

Each group lives in its own module and exposes `register(subparsers)`, which adds its parser and
sets `handler` (a function taking the parsed arguments and returning an exit code) on it.
Exit codes: 0 done, 1 the command failed (or a setting is wrong), 2 wrong usage, 3 Kafka or
PostgreSQL did not answer, 4 a lock another session holds (waited `DATABASE_ADMIN_LOCK_TIMEOUT_MS`),
130 interrupted (Ctrl-C), 141 its output's reader went away (`| head`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from confluent_kafka import KafkaException
from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from lotlens_admin import clients, dlq, jobs, projections, schema, shards, stages
from lotlens_admin.clients import BadConfiguration
from lotlens_admin.environment import settings_problem, url_problem
from lotlens_admin.sessions import lock_refused
from lotlens_common.logs import KAFKA_LOGGER
from lotlens_common.producer import PublishError

# As a shell reports a process ended by that signal (128 + SIGINT, 128 + SIGPIPE).
INTERRUPTED, OUTPUT_GONE = 130, 141
# Its lock wait ran out (`sessions`): nothing is wrong but another session's transaction.
LOCKED = 4

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# Groups are added here as they are built (e.g. `dlq`, `projections`).
GROUPS: tuple[Register, ...] = (projections.register, dlq.register, clients.register, jobs.register,
                                shards.register, stages.register, schema.register)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered group."""
    parser = argparse.ArgumentParser(
        prog="lotlens-admin",
        description="Operator tools for LotLens. Settings come from the same environment as the services.",
        epilog="exit status: 0 done, 1 the command failed or a setting is wrong, 2 wrong usage, 3 Kafka or "
        "PostgreSQL did not answer, 4 a table it needs stayed locked by another session (try again), 130 "
        "interrupted (run it again to finish), 141 output's reader went away",
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP")
    for register in GROUPS:
        register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one admin command; the exit code is the command's."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _without_librdkafka_lines():
            code = handler(args)
        sys.stdout.flush()  # here, not at exit, where a reader gone was a traceback after the fact
        return code
    except KeyboardInterrupt:
        # A transaction under way rolls back; a replay's letters not yet marked are sent again,
        # which their groups take once (docs/RUNBOOK.md, "LotLensDeadLetters").
        return _say("interrupted", "run the same command again to finish (each one is safe to repeat)",
                    INTERRUPTED)
    except BrokenPipeError:
        # `| head` read what it wanted: no traceback, and none from Python's own flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OUTPUT_GONE
    except ValidationError as exc:
        problem = settings_problem(exc)
        if problem is None:
            raise
        return _say("a setting of this environment is wrong", problem, 1)
    except ArgumentError:
        if (wrong := url_problem()) is None:
            raise
        return _say("a setting of this environment is wrong", wrong, 1)
    except KafkaException as exc:
        return _say("Kafka did not answer", exc.args[0].str() if exc.args else str(exc), 3)
    except PublishError as exc:
        return _say("Kafka did not acknowledge", str(exc), 3)
    except OperationalError as exc:
        if (locked := lock_refused(exc)) is not None:
            return _say("a lock it needs is held", locked, LOCKED)
        return _say("PostgreSQL did not answer", str(exc.orig or exc), 3)
    except InterfaceError as exc:
        return _say("PostgreSQL did not answer", str(exc.orig or exc), 3)
    except DBAPIError as exc:  # it answered: a missing table, a permission, a constraint
        return _say("PostgreSQL refused the command", str(exc.orig or exc), 1)
    except BadConfiguration as exc:
        return _say("a setting of this environment is wrong", str(exc), 1)


def _say(what: str, reason: str, code: int) -> int:
    # An outage is when operators reach for this tool: one line that says what, not a traceback.
    first_line = reason.strip().splitlines()[0] if reason.strip() else "no reason given"
    print(f"lotlens-admin: {what}: {first_line}", file=sys.stderr)
    return code


@contextmanager
def _without_librdkafka_lines() -> Iterator[None]:
    """Drop librdkafka's own log lines while a command runs.

    With no logging set up they reached stderr through Python's last-resort handler: a broker
    that refuses connections is about 20 lines a second (195 before `dlq list`'s own line, 581
    before a rebuild's). Every failure they describe also reaches the command as an error or a
    timeout, which it reports in one line.
    """
    was = KAFKA_LOGGER.disabled
    KAFKA_LOGGER.disabled = True
    try:
        yield
    finally:
        KAFKA_LOGGER.disabled = was
