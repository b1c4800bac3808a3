"""`lotlens-admin dlq list|show|replay|discard`: the dead-letter topic for SREs.

A dead letter is one consuming group's copy of a message it could not handle; `replay` sends it
back to its source topic addressed to that group alone (the other groups skip it) and then
records the replay in the dead-letter topic itself, so a second `replay` skips what is done.
`discard` records the same way that an operator gave a letter up (poison no release will read).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from lotlens_admin.letters import (
    DISCARDED,
    REPLAYED,
    STATES,
    DeadLetter,
    Letters,
    header,
    mark,
    read_letters,
)
from lotlens_admin.sessions import admin_engine
from lotlens_common import dead_letters as dl
from lotlens_common.db import held_alone
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.redaction import redacted
from lotlens_common.settings import KafkaSettings, TopicSettings

__all__ = ["DeadLetter", "Letters", "read_letters", "register", "replay"]


# Letters sent back per acknowledged flush, each part marked replayed once acknowledged: one
# flush for them all (30 s) failed a large replay whole, marking nothing, so every rerun sent
# them all again.
REPLAY_CHUNK = 500
# The session advisory lock `dlq replay` and `dlq discard` hold while they read and mark (any
# fixed bigint but the rebuild's): two operators replaying at once both sent every letter, and a
# replay racing a discard could end listed `discarded`.
HANDLING_LOCK = 0x4C4C444C51


class HandlingRunning(Exception):
    """Another `dlq replay` or `dlq discard` holds the lock."""


@contextmanager
def handling_alone() -> Iterator[None]:
    """Hold the dead-letter handling lock for the block; `HandlingRunning` at once if it is held."""
    engine = admin_engine(pool_size=1)
    try:
        with held_alone(engine, HANDLING_LOCK, HandlingRunning(
                "another `dlq replay` or `dlq discard` is running; run this again once it ends (it "
                "leaves out what that one did)")):
            yield
    finally:
        engine.dispose()


def replay(kafka: KafkaSettings, topics: TopicSettings, letters: Sequence[DeadLetter]) -> None:
    """Send each dead letter back to its source topic for its group alone, `REPLAY_CHUNK` at a
    time, each part marked replayed once Kafka acknowledged it."""
    producer = EventProducer(kafka, "lotlens-admin")
    for start in range(0, len(letters), REPLAY_CHUNK):
        part = list(letters[start:start + REPLAY_CHUNK])
        for letter in part:
            original = [(k, v) for k, v in letter.headers if k not in dl.DLQ_HEADERS]
            producer.publish_raw(letter.source_topic, letter.key, letter.value,
                                 [*original, (dl.REPLAY_GROUP, letter.group.encode())])
        try:
            # Replayed first: a crash before the markers replays the part again (handlers are idempotent).
            producer.flush()
            mark(producer, topics.dead_letter, part, REPLAYED)
        except PublishError as exc:
            raise PublishError(f"{start} of {len(letters)} dead letters replayed and marked, the rest "
                               f"not (run it again for them): {exc}") from exc


def _selected(args: argparse.Namespace, found: Letters) -> list[DeadLetter]:
    return [letter for letter in found.letters
            if (not args.position or letter.position in args.position)
            and (args.group is None or letter.group == args.group)
            and (args.reason is None or letter.reason == args.reason)
            and (args.topic is None or letter.source_topic == args.topic)]


def _not_there(args: argparse.Namespace, found: Letters) -> str | None:
    """What the operator named that no dead letter has (a typo, most likely), or None.

    Such a selection used to read "0 dead letters replayed" with exit 0, like a done job.
    """
    positions = {letter.position for letter in found.letters}
    for position in args.position or ():
        if position not in positions:
            return f"no dead letter at {position}"
    for name, value, known in (("group", args.group, {letter.group for letter in found.letters}),
                               ("topic", args.topic, {letter.source_topic for letter in found.letters})):
        if value is not None and value not in known:
            return f"no dead letter of {name} {value!r} (`lotlens-admin dlq list` shows them)"
    return None


def _row(letter: DeadLetter, found: Letters) -> str:
    job = letter.key.decode(errors="replace") if letter.key else "-"
    return (f"{letter.position:<10} {found.state(letter):<9} {letter.group:<28} {letter.reason:<15} "
            f"{letter.event_type:<20} {job:<38} {letter.source}")


def _listed(letter: DeadLetter, found: Letters) -> dict[str, str | None]:
    """One letter as `dlq list --json` gives it: the columns, the job whole and the error (URLs cut)."""
    return {"position": letter.position, "state": found.state(letter), "group": letter.group,
            "reason": letter.reason, "type": letter.event_type,
            "job": letter.key.decode(errors="replace") if letter.key else None,
            "source": letter.source, "error": redacted(letter.error)}


def _list(args: argparse.Namespace) -> int:
    found = read_letters(KafkaSettings(), TopicSettings().dead_letter)
    chosen = [letter for letter in _selected(args, found)
              if args.state is None or found.state(letter) == args.state]
    if args.json:
        print(json.dumps([_listed(letter, found) for letter in chosen], indent=2, ensure_ascii=False))
        return 0
    print(f"{'POSITION':<10} {'STATE':<9} {'GROUP':<28} {'REASON':<15} {'TYPE':<20} {'JOB':<38} SOURCE")
    for letter in chosen:
        print(_row(letter, found))
    return 0


def _show(args: argparse.Namespace) -> int:
    found = read_letters(KafkaSettings(), TopicSettings().dead_letter)
    matches = [letter for letter in found.letters if letter.position == args.position_arg]
    if not matches:
        print(f"no dead letter at {args.position_arg}", file=sys.stderr)
        return 1
    letter = matches[0]
    try:
        body: object = json.loads(letter.value or b"")
    except ValueError:
        body = (letter.value or b"").decode(errors="replace")
    key = letter.key.decode(errors="replace") if letter.key else None
    handled = found.handled.get(letter.position)
    shown = json.dumps({"position": letter.position, "state": found.state(letter),
                        "replayed": found.state(letter) == REPLAYED,
                        **({"note": handled.note} if handled and handled.note else {}),
                        "group": letter.group, "reason": letter.reason, "error": letter.error,
                        "source": letter.source, "key": key,
                        "headers": {k: header(letter.headers, k) for k, _ in letter.headers},
                        "message": body}, indent=2, ensure_ascii=False)
    print(shown if args.reveal else redacted(shown))
    return 0


def _handled_already(chosen: list[DeadLetter], found: Letters) -> list[DeadLetter]:
    """The chosen letters not handled yet; each one named by position that was says so."""
    waiting = []
    for letter in chosen:
        done = found.handled.get(letter.position)
        if done is None:
            waiting.append(letter)
        else:
            print(f"{letter.position} was already {done.state}" + (f" ({done.note})" if done.note else ""),
                  file=sys.stderr)
    return waiting


def _replay(args: argparse.Namespace) -> int:
    if not (args.all or args.position or args.group or args.reason or args.topic):
        print("say which dead letters to replay (--position, --group, --reason, --topic) or --all",
              file=sys.stderr)
        return 2
    return _replay_read(args) if args.dry_run else _alone(lambda: _replay_read(args))


def _alone(command: Callable[[], int]) -> int:
    """Run a command that marks dead letters under the handling lock (read after it is taken)."""
    try:
        with handling_alone():
            return command()
    except HandlingRunning as exc:
        print(f"lotlens-admin: {exc}; nothing was done", file=sys.stderr)
        return 1


def _replay_read(args: argparse.Namespace) -> int:
    kafka, topics = KafkaSettings(), TopicSettings()
    found = read_letters(kafka, topics.dead_letter)
    if problem := _not_there(args, found):
        print(f"lotlens-admin: {problem}; nothing was replayed", file=sys.stderr)
        return 1
    named = bool(args.position)
    chosen = [letter for letter in _selected(args, found) if named or letter.position not in found.handled]
    chosen = _handled_already(chosen, found)
    # Its bytes are what no release can read (a newer release's events are `future-version`):
    # replayed, it can only die again (and count as a new dead letter, firing the alert again).
    # `discard` is for it, or --force.
    refused = [letter for letter in chosen if letter.reason == dl.UNDECODABLE and not args.force]
    if refused:
        print(f"lotlens-admin: left out {len(refused)} undecodable dead letters "
              f"({', '.join(letter.position for letter in refused)}): replayed they are dead-lettered "
              "again; `dlq discard` them, or replay with --force", file=sys.stderr)
    chosen = [letter for letter in chosen if letter not in refused]
    for letter in chosen:
        print(("would replay " if args.dry_run else "replaying ") + _row(letter, found))
    if not args.dry_run and chosen:
        replay(kafka, topics, chosen)
    print(f"{len(chosen)} dead letters {'to replay' if args.dry_run else 'replayed'}")
    return 1 if refused and named else 0


def _discard(args: argparse.Namespace) -> int:
    return _alone(lambda: _discard_read(args))


def _discard_read(args: argparse.Namespace) -> int:
    kafka, topics = KafkaSettings(), TopicSettings()
    found = read_letters(kafka, topics.dead_letter)
    matches = [letter for letter in found.letters if letter.position == args.position_arg]
    if not matches:
        print(f"lotlens-admin: no dead letter at {args.position_arg}; nothing was discarded", file=sys.stderr)
        return 1
    if matches[0].reason == dl.FUTURE_VERSION and not args.force and args.position_arg not in found.handled:
        # A newer release's event: its job waits for it, replayed once that release runs. A
        # discard is for good (no replay takes it back), so a mistyped position lost the event.
        print(f"lotlens-admin: {args.position_arg} is a future-version letter: replay it once the newer "
              "release is out (`dlq replay --position`), its job waits for it; discard it with --force "
              "only if it is a rogue event; nothing was discarded", file=sys.stderr)
        return 1
    if _handled_already(matches, found):
        mark(EventProducer(kafka, "lotlens-admin"), topics.dead_letter, matches, DISCARDED, args.reason)
        print(f"discarded {_row(matches[0], found)}")
    return 0


_POSITION = re.compile(r"\d+:\d+")


def _position(text: str) -> str:
    if not _POSITION.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a dead letter's PARTITION:OFFSET (as `dlq list` shows it), "
                                         f"not {text!r}")
    return text


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--position", action="append", type=_position,
                        help="a dead letter's PARTITION:OFFSET (repeatable)")
    parser.add_argument("--group", help="only dead letters of this consumer group")
    parser.add_argument("--reason", choices=dl.REASONS)
    parser.add_argument("--topic", help="only dead letters from this source topic")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq list`, `dlq show`, `dlq replay` and `dlq discard`."""
    dlq = groups.add_parser("dlq", help="list, inspect, replay and discard dead letters")
    commands = dlq.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="one line per dead letter (state, group, reason, event, job, "
                                  "source); state is open, replayed or discarded")
    _add_filters(listing)
    listing.add_argument("--state", choices=STATES,
                         help="only letters in this state (open: neither replayed nor discarded yet)")
    listing.add_argument("--json", action="store_true",
                         help="the same letters as a JSON array, with each one's error (for scripts)")
    listing.set_defaults(handler=_list)
    show = commands.add_parser("show", help="one dead letter in full: error, headers, message")
    show.add_argument("position_arg", metavar="PARTITION:OFFSET", type=_position)
    show.add_argument("--reveal", action="store_true",
                      help="print URLs whole (their query strings hold customers' credentials)")
    show.set_defaults(handler=_show)
    again = commands.add_parser("replay", help="send dead letters back to their source topic, each "
                                "to the group that failed it (handled ones and undecodable ones are "
                                "left out)")
    _add_filters(again)
    again.add_argument("--all", action="store_true", help="every dead letter not replayed or discarded yet")
    again.add_argument("--dry-run", action="store_true", help="print what would be replayed, send nothing")
    again.add_argument("--force", action="store_true",
                       help="replay undecodable letters too (they come back as new dead letters "
                       "unless the consumers changed)")
    again.set_defaults(handler=_replay)
    discard = commands.add_parser("discard", help="mark a dead letter handled without replaying it "
                                  "(poison no fix will make readable); `list` shows it discarded")
    discard.add_argument("position_arg", metavar="PARTITION:OFFSET", type=_position)
    discard.add_argument("--reason", required=True, help="why, for whoever reads `dlq show` later")
    discard.add_argument("--force", action="store_true",
                         help="discard a future-version letter too (a newer release's event its job "
                         "waits for; no replay brings a discarded letter back)")
    discard.set_defaults(handler=_discard)
