"""`lotlens-admin` commands that read the log (`projections rebuild`, `dlq list`) wait out a broker
restart, and give up in one line when the broker stays away. A private broker of the module's own
(each test on topics and a database of its own), stopped as the command starts reading and
started again 10 s later, as a rolling restart does."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from types import ModuleType

import confluent_kafka
import pytest
from sqlalchemy import Engine, text

from lotlens_admin import letters
from lotlens_admin.cli import main
from lotlens_common import dead_letters as dl
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_common.topics import ensure_topics
from lotlens_result_store import replay
from tests.integration.admin_support import TOPIC_NAMES
from tests.integration.result_store.support import job_script, publish
from tests.private_kafka import PrivateKafka, private_kafka

pytestmark = pytest.mark.integration

DOWN_S = 10.0


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """Started once for the module: formatting and starting a broker took 5-8 s of every test."""
    with private_kafka(tmp_path_factory.mktemp("kafka")) as started:
        yield started


@pytest.fixture()
def restarts() -> Iterator[list[threading.Thread]]:
    """The broker restarts a test began, each over before the next test starts."""
    begun: list[threading.Thread] = []
    yield begun
    for restart in begun:
        restart.join(120)


@pytest.fixture()
def broker(module_broker: PrivateKafka) -> PrivateKafka:
    """The module's broker, running (started again when an earlier test left it stopped)."""
    if module_broker.process is None:
        module_broker.start()
    return module_broker


@pytest.fixture()
def log_topics(broker: PrivateKafka) -> TopicSettings:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    topics = TopicSettings.model_validate({**{name: f"{prefix}.{name}" for name in TOPIC_NAMES},
                                           "partitions": 2})
    ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), topics)
    return topics


@pytest.fixture()
def admin(monkeypatch: pytest.MonkeyPatch, broker: PrivateKafka, own_database: str,
          log_topics: TopicSettings) -> None:
    """`lotlens-admin` in this process, aimed at the private broker, the test's database and topics."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("DATABASE_URL", own_database)
    for name in TOPIC_NAMES:
        monkeypatch.setenv(f"LOTLENS_TOPIC_{name.upper()}", getattr(log_topics, name))


def stopped_as_reading_starts(monkeypatch: pytest.MonkeyPatch, module: ModuleType, broker: PrivateKafka,
                              down_s: float | None, restarts: list[threading.Thread]) -> None:
    """The broker stops as the module's first consumer is assigned its partitions (after the
    command read the offsets it reads up to), and starts again `down_s` later (None: never, and
    no restart is added to `restarts`)."""
    stopped = threading.Event()

    def start_later() -> None:
        time.sleep(down_s or 0.0)
        broker.start()

    class Restarting(confluent_kafka.Consumer):
        def assign(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
            if not stopped.is_set():
                stopped.set()
                broker.stop()
                if down_s is not None:
                    restarts.append(threading.Thread(target=start_later, daemon=True))
                    restarts[0].start()
            super().assign(partitions)

    monkeypatch.setattr(module, "Consumer", Restarting)


def test_a_rebuild_waits_out_a_broker_restart(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], broker: PrivateKafka,
        restarts: list[threading.Thread], own_engine: Engine, log_topics: TopicSettings, admin: None) -> None:
    # The first transport error a consume returned ended the rebuild (it resumes, but the
    # operator saw it fail, possibly in its final phase with the live tables locked).
    script = job_script(20, failed=[3])
    publish(EventProducer(KafkaSettings(bootstrap_servers=broker.bootstrap), "pipeline-test"), log_topics,
            script)
    stopped_as_reading_starts(monkeypatch, replay, broker, DOWN_S, restarts)
    code = main(["projections", "rebuild"])
    restarts[0].join(120)
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    assert restarts and out.startswith("rebuilt: "), out
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM lots")).scalar_one() == 20


def test_a_rebuild_whose_batches_take_postgresql_longer_than_the_patience_goes_on(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], broker: PrivateKafka,
        own_engine: Engine, log_topics: TopicSettings, admin: None) -> None:
    # The time a batch spent in PostgreSQL counted as Kafka's silence: a batch applied in more
    # than KAFKA_COMMAND_PATIENCE_S ended the rebuild "Kafka did not answer", and its rerun again.
    script = job_script(20)
    publish(EventProducer(KafkaSettings(bootstrap_servers=broker.bootstrap), "pipeline-test"), log_topics,
            script)
    monkeypatch.setenv("KAFKA_COMMAND_PATIENCE_S", "2")
    apply = replay._apply

    def slow(engine: Engine, messages: list[confluent_kafka.Message], *rest: object) -> int:
        if messages:
            time.sleep(2.5)  # a heavy batch, or one waiting on a lock
        return apply(engine, messages, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(replay, "_apply", slow)
    # At least two batches, each slow (the second is read after the first's 2.5 s), not five.
    events = len(script.all_events())
    code = main(["projections", "rebuild", "--batch-size", str(events // 2 + 1)])
    assert code == 0, capsys.readouterr().err[-2000:]
    with own_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM lots")).scalar_one() == 20


def test_the_dead_letter_listing_waits_out_a_broker_restart(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], broker: PrivateKafka,
        restarts: list[threading.Thread], log_topics: TopicSettings, admin: None) -> None:
    producer = EventProducer(KafkaSettings(bootstrap_servers=broker.bootstrap), "pipeline-test")
    for offset in range(3):
        producer.publish_raw(log_topics.dead_letter, b"job", b"{}", [
            (dl.GROUP, b"lotlens-result-store"), (dl.REASON, dl.UNDECODABLE.encode()),
            (dl.ERROR, b"not json"), (dl.SOURCE_TOPIC, log_topics.vision.encode()),
            (dl.SOURCE_PARTITION, b"0"), (dl.SOURCE_OFFSET, str(offset).encode())])
    producer.flush()
    stopped_as_reading_starts(monkeypatch, letters, broker, DOWN_S, restarts)
    code = main(["dlq", "list"])
    restarts[0].join(120)
    out, err = capsys.readouterr()
    assert code == 0 and restarts, err[-2000:]
    assert out.count("lotlens-result-store") == 3, out


def test_a_rebuild_gives_up_in_one_line_when_the_broker_stays_away(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], broker: PrivateKafka,
        restarts: list[threading.Thread], own_engine: Engine, log_topics: TopicSettings, admin: None) -> None:
    # Last in the module: the broker it leaves stopped needs no start for a test after it.
    publish(EventProducer(KafkaSettings(bootstrap_servers=broker.bootstrap), "pipeline-test"), log_topics,
            job_script(2))
    # It waited for ever: librdkafka tells `consume` nothing of a broker that is down.
    monkeypatch.setenv("KAFKA_COMMAND_PATIENCE_S", "3")
    stopped_as_reading_starts(monkeypatch, replay, broker, None, restarts)
    codes: list[int] = []
    command = threading.Thread(target=lambda: codes.append(main(["projections", "rebuild"])), daemon=True)
    command.start()
    command.join(60)
    assert codes, "the rebuild still waited 60 s after the broker went away"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    # The silence it names is measured, so at least the patience: on a loaded machine the check after
    # a consume's timeout came at 3.5 s and said "4 s".
    silence = re.match(r"lotlens-admin: Kafka did not answer: no message for (\d+) s", last)
    assert codes == [3] and silence is not None and 3 <= int(silence[1]) < 60, last
    assert last.endswith("run the same command again to resume"), last
