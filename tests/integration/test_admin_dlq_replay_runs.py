"""`lotlens-admin dlq replay` on a real broker and database when Kafka acknowledges only part of a
replay, when two operators replay at once, and when a replay and a discard cross: each letter is
sent back once, marked as soon as Kafka has it, and listed as what happened to it."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from lotlens_admin import cli, dlq
from lotlens_admin.letters import read_letters
from lotlens_common import dead_letters as dl
from lotlens_common.producer import EventProducer, Headers, PublishError
from lotlens_common.settings import KafkaSettings, ServiceSettings, TopicSettings
from tests.conftest import Infra, new_id
from tests.integration.admin_support import TOPIC_NAMES, admin_env, run_admin
from tests.integration.dead_letter_support import cancelled

pytestmark = pytest.mark.integration


@pytest.fixture()
def letters(infra: Infra, settings: ServiceSettings,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Three open dead letters of one group (their jobs' keys), this test's environment set."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.kafka_bootstrap)
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    for name in TOPIC_NAMES:
        monkeypatch.setenv(f"LOTLENS_TOPIC_{name.upper()}", getattr(settings.topics, name))
    group, keys = new_id("vision-"), [new_id("job-").encode() for _ in range(3)]
    publisher = EventProducer(settings.kafka, "test")
    for offset, key in enumerate(keys):
        publisher.publish_raw(settings.topics.dead_letter, key, cancelled(key.decode()), [
            ("type", b"JobCancelled"), (dl.ERROR, b"boom"), (dl.REASON, dl.HANDLER_FAILED.encode()),
            (dl.GROUP, group.encode()), (dl.SOURCE_TOPIC, settings.topics.submissions.encode()),
            (dl.SOURCE_PARTITION, b"0"), (dl.SOURCE_OFFSET, str(offset).encode())])
    publisher.flush()
    yield keys


def replayed_copies(kafka: KafkaSettings, topic: str) -> Counter[bytes]:
    """How many replayed copies of each job's message its source topic holds."""
    consumer = Consumer({**kafka.client_config(), "group.id": new_id("count-"), "enable.partition.eof": True})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
        waiting = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in waiting])
        copies: Counter[bytes] = Counter()
        while waiting:
            for message in consumer.consume(100, 1.0):
                if message.error() is None:
                    replayed = dl.REPLAY_GROUP in dict(message.headers() or [])
                    copies[message.key() or b""] += replayed
                partition = message.partition() or 0
                if message.error() is not None or (message.offset() or 0) + 1 >= ends[partition]:
                    waiting.discard(partition)
        return copies
    finally:
        consumer.close()


def states(settings: ServiceSettings) -> dict[bytes, str]:
    found = read_letters(settings.kafka, settings.topics.dead_letter)
    return {letter.key or b"": found.state(letter) for letter in found.letters}


class AcknowledgingTwo(EventProducer):
    """Delivers everything, but reports the flush that takes the third replayed copy as failed."""

    published = 0

    def publish_raw(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        AcknowledgingTwo.published += value is not None
        super().publish_raw(topic, key, value, headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        super().flush(timeout_s)
        if AcknowledgingTwo.published == 3:
            AcknowledgingTwo.published += 1
            raise PublishError("1 unacknowledged, 0 failed: []")


def test_a_replay_kafka_acknowledges_in_part_marks_what_it_has_and_a_rerun_sends_only_the_rest(
        letters: list[bytes], settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dlq, "EventProducer", AcknowledgingTwo)
    monkeypatch.setattr(dlq, "REPLAY_CHUNK", 2, raising=False)
    assert cli.main(["dlq", "replay", "--all"]) == 3
    assert "2 of 3 dead letters replayed and marked" in capsys.readouterr().err
    assert sorted(states(settings).values()) == ["open", "replayed", "replayed"], (
        "what Kafka acknowledged was not marked")

    monkeypatch.setattr(dlq, "EventProducer", EventProducer)
    assert cli.main(["dlq", "replay", "--all"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 dead letters replayed"
    copies = replayed_copies(settings.kafka, settings.topics.submissions)
    assert sorted(copies[key] for key in letters) == [1, 1, 2]  # the one unacknowledged went twice


def test_two_replays_at_once_send_each_letter_once(
        infra: Infra, letters: list[bytes], settings: ServiceSettings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    flushing, go_on = threading.Event(), threading.Event()

    class Slow(EventProducer):
        def flush(self, timeout_s: float = 30.0) -> None:
            flushing.set()  # the first operator's replay is under way: sent, not acknowledged yet
            go_on.wait(60)
            super().flush(timeout_s)

    monkeypatch.setattr(dlq, "EventProducer", Slow)
    first: list[int] = []
    running = threading.Thread(target=lambda: first.append(cli.main(["dlq", "replay", "--all"])))
    running.start()
    try:
        assert flushing.wait(60)
        second: subprocess.CompletedProcess[str] = run_admin(
            admin_env(infra.kafka_bootstrap, infra.database_url, settings.topics), "dlq", "replay", "--all")
    finally:
        go_on.set()
        running.join(60)
    assert first == [0]
    assert second.returncode == 1 and "another `dlq replay`" in second.stderr, (second.stdout, second.stderr)
    assert replayed_copies(settings.kafka, settings.topics.submissions) == dict.fromkeys(letters, 1)


def test_a_letter_both_replayed_and_discarded_is_listed_replayed(
        letters: list[bytes], settings: ServiceSettings, topics: TopicSettings) -> None:
    # A replay that read the letter open, then a discard of it, then the replay's marker: the
    # first marker won, so a letter whose message went back to its group was listed discarded.
    position = next(letter.position for letter in read_letters(settings.kafka, topics.dead_letter).letters
                    if letter.key == letters[0])
    marks = EventProducer(settings.kafka, "test")
    for marker, note in ((dl.DISCARDED, b"rogue"), (dl.REPLAYED, b"")):
        marks.publish_raw(topics.dead_letter, letters[0], None,
                          [(marker, position.encode()), (dl.NOTE, note)])
    marks.flush()
    assert states(settings)[letters[0]] == "replayed"
