"""`lotlens-admin dlq list|show|replay`: the dead-letter topic for SREs.

A dead letter is one consuming group's copy of a message it could not handle; `replay` sends it
back to its source topic addressed to that group alone (the other groups skip it) and then
records the replay in the dead-letter topic itself, so a second `replay` skips what is done.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from lotlens_common import dead_letters as dl
from lotlens_common.producer import EventProducer, Headers
from lotlens_common.settings import KafkaSettings, TopicSettings


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: where it is, what failed and the original message."""

    position: str  # "<partition>:<offset>" in the dead-letter topic
    group: str
    reason: str
    error: str
    source: str  # "<topic>:<partition>:<offset>" it came from
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def source_topic(self) -> str:
        """The topic the message was consumed from (a replay goes back there)."""
        return self.source.rsplit(":", 2)[0]

    @property
    def event_type(self) -> str:
        """The event type header of the original message, if any."""
        return _header(self.headers, "type") or "?"


@dataclass(frozen=True)
class Letters:
    """The dead letters (one per group and source message; re-deliveries folded) and the
    positions of those already replayed."""

    letters: list[DeadLetter]
    replayed: set[str]


def read_letters(kafka: KafkaSettings, topic: str, timeout_s: float = 10.0) -> Letters:
    """Read the whole dead-letter topic, from its start to its current end."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"lotlens-admin-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise SystemExit(f"cannot read {topic}: {metadata.error}")
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                for p in metadata.partitions}
        waiting = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in waiting])
        seen: dict[tuple[str, str], DeadLetter] = {}
        replayed: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: partitions {sorted(waiting)} stalled before their end")
            for message in consumer.consume(500, 0.2):
                deadline = time.monotonic() + timeout_s
                error, partition = message.error(), message.partition() or 0
                if error is None:
                    _collect(message, seen, replayed)
                    if (message.offset() or 0) + 1 >= ends[partition]:
                        waiting.discard(partition)
                elif error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(partition)
                else:
                    raise SystemExit(f"cannot read {topic}: {error}")
        return Letters(list(seen.values()), replayed)
    finally:
        consumer.close()


def _collect(message: Message, seen: dict[tuple[str, str], DeadLetter], replayed: set[str]) -> None:
    headers: Headers = [(str(h[0]), h[1]) for h in message.headers() or []]
    marker = _header(headers, dl.REPLAYED)
    if marker is not None:
        replayed.add(marker)
        return
    letter = DeadLetter(
        position=f"{message.partition()}:{message.offset()}",
        group=_header(headers, dl.GROUP) or "?", reason=_header(headers, dl.REASON) or "?",
        error=_header(headers, dl.ERROR) or "",
        source=":".join(_header(headers, h) or "?" for h in (dl.SOURCE_TOPIC, dl.SOURCE_PARTITION,
                                                             dl.SOURCE_OFFSET)),
        key=message.key(), value=message.value(), headers=headers)
    # A crash between dead-lettering and storing the offset dead-letters the same message again.
    seen.setdefault((letter.group, letter.source), letter)


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def replay(kafka: KafkaSettings, topics: TopicSettings, letters: Sequence[DeadLetter]) -> None:
    """Send each dead letter back to its source topic for its group alone, then mark it replayed."""
    producer = EventProducer(kafka, "lotlens-admin")
    for letter in letters:
        original = [(k, v) for k, v in letter.headers if k not in dl.DLQ_HEADERS]
        producer.publish_raw(letter.source_topic, letter.key, letter.value,
                             [*original, (dl.REPLAY_GROUP, letter.group.encode())])
    producer.flush()  # replayed first: a crash before the markers replays again (handlers are idempotent)
    for letter in letters:
        producer.publish_raw(topics.dead_letter, letter.key, None, [(dl.REPLAYED, letter.position.encode())])
    producer.flush()


def _selected(args: argparse.Namespace, found: Letters) -> list[DeadLetter]:
    return [letter for letter in found.letters
            if (not args.position or letter.position in args.position)
            and (args.group is None or letter.group == args.group)
            and (args.reason is None or letter.reason == args.reason)
            and (args.topic is None or letter.source_topic == args.topic)]


def _row(letter: DeadLetter, replayed: set[str]) -> str:
    state = "replayed" if letter.position in replayed else "dead"
    job = letter.key.decode(errors="replace") if letter.key else "-"
    return (f"{letter.position:<10} {state:<9} {letter.group:<28} {letter.reason:<15} "
            f"{letter.event_type:<20} {job:<38} {letter.source}")


def _list(args: argparse.Namespace) -> int:
    found = read_letters(KafkaSettings(), TopicSettings().dead_letter)
    print(f"{'POSITION':<10} {'STATE':<9} {'GROUP':<28} {'REASON':<15} {'TYPE':<20} {'JOB':<38} SOURCE")
    for letter in _selected(args, found):
        print(_row(letter, found.replayed))
    return 0


# A URL's query and userinfo: where customers' image URLs carry their signatures (S3's
# X-Amz-Signature, GCS's X-Goog-Signature, Azure's sig=) and webhook URLs their tokens.
_URL_SECRETS = re.compile(r"(https?://)[^/\s\"'?#@]*@|(https?://[^\s\"'?#]*)\?[^\s\"'#]*")


def _hide_url_secrets(text: str) -> str:
    return _URL_SECRETS.sub(lambda m: m.group(1) if m.group(1) else f"{m.group(2)}?…", text)


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
    shown = json.dumps({"position": letter.position, "replayed": letter.position in found.replayed,
                        "group": letter.group, "reason": letter.reason, "error": letter.error,
                        "source": letter.source, "key": key,
                        "headers": {k: _header(letter.headers, k) for k, _ in letter.headers},
                        "message": body}, indent=2, ensure_ascii=False)
    print(shown if args.reveal else _hide_url_secrets(shown))
    return 0


def _replay(args: argparse.Namespace) -> int:
    if not (args.all or args.position or args.group or args.reason or args.topic):
        print("say which dead letters to replay (--position, --group, --reason, --topic) or --all",
              file=sys.stderr)
        return 2
    kafka, topics = KafkaSettings(), TopicSettings()
    found = read_letters(kafka, topics.dead_letter)
    chosen = [letter for letter in _selected(args, found) if letter.position not in found.replayed]
    for letter in chosen:
        print(("would replay " if args.dry_run else "replaying ") + _row(letter, found.replayed))
    if not args.dry_run and chosen:
        replay(kafka, topics, chosen)
    print(f"{len(chosen)} dead letters {'to replay' if args.dry_run else 'replayed'}")
    return 0


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--position", action="append", help="a dead letter's PARTITION:OFFSET (repeatable)")
    parser.add_argument("--group", help="only dead letters of this consumer group")
    parser.add_argument("--reason", choices=(dl.UNDECODABLE, dl.FUTURE_VERSION, dl.HANDLER_FAILED))
    parser.add_argument("--topic", help="only dead letters from this source topic")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq list`, `dlq show` and `dlq replay`."""
    dlq = groups.add_parser("dlq", help="list, inspect and replay dead letters")
    commands = dlq.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="one line per dead letter (group, reason, event, job, source)")
    _add_filters(listing)
    listing.set_defaults(handler=_list)
    show = commands.add_parser("show", help="one dead letter in full: error, headers, message")
    show.add_argument("position_arg", metavar="PARTITION:OFFSET")
    show.add_argument("--reveal", action="store_true",
                      help="print URLs whole (their query strings hold customers' credentials)")
    show.set_defaults(handler=_show)
    again = commands.add_parser("replay", help="send dead letters back to their source topic, each "
                                "to the group that failed it (already replayed ones are skipped)")
    _add_filters(again)
    again.add_argument("--all", action="store_true", help="every dead letter not replayed yet")
    again.add_argument("--dry-run", action="store_true", help="print what would be replayed, send nothing")
    again.set_defaults(handler=_replay)
