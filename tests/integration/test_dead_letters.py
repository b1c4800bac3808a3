"""Dead letters on the real broker: two consumer groups read one topic; each dead-letters its own
copy of what it cannot handle, and `lotlens-admin dlq` lists them and replays each to its group
alone, once, e.g. a future event version after the code is upgraded."""

from __future__ import annotations

from typing import ClassVar

import orjson
import pytest

from lotlens_admin import cli
from lotlens_common.events import EVENT_TYPES, Event, JobCancelled
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from tests.conftest import Infra, new_id
from tests.integration.dead_letter_support import cancelled, consuming
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def admin(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_dead_letters_are_listed_per_group_and_replayed_to_that_group_alone_once(
        infra: Infra, settings: ServiceSettings, topics: TopicSettings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.kafka_bootstrap)
    monkeypatch.setenv("LOTLENS_TOPIC_DEAD_LETTER", topics.dead_letter)
    vision, translator = new_id("vision-"), new_id("translator-")
    seen: dict[str, list[str]] = {vision: [], translator: []}
    publisher = EventProducer(settings.kafka, "test")
    for key, value in ((b"future", cancelled("future", version=2)), (b"poison", cancelled("poison")),
                       (b"junk", b"{not json"), (b"good", cancelled("good"))):
        publisher.publish_raw(topics.submissions, key, value, [("type", b"JobCancelled")])
    publisher.flush()

    with consuming(settings, [vision, translator], seen):
        wait_for(lambda: all("good" in jobs for jobs in seen.values()), "the valid event", timeout_s=90)
        wait_for(lambda: len(admin(capsys, "dlq", "list")) == 7, "six dead letters", timeout_s=30,
                 every_s=0.2)
        rows = admin(capsys, "dlq", "list")[1:]
        assert sorted((row.split()[2], row.split()[3]) for row in rows) == sorted(
            (group, reason) for group in (vision, translator)
            for reason in ("future-version", "handler-failed", "undecodable"))
        assert seen == {vision: ["good"], translator: ["good"]}, "a version-2 event was read as version 1"

        future = [row.split()[0] for row in rows if row.split()[2] == vision and "future-version" in row]
        shown = "\n".join(admin(capsys, "dlq", "show", future[0]))
        assert '"reason": "future-version"' in shown and "version 2 is newer" in shown

        # The vision code is upgraded: it reads version 2 now; the translator is not.
        monkeypatch.setattr(JobCancelled, "version", 2)
        dry = admin(capsys, "dlq", "replay", "--group", vision, "--reason", "future-version", "--dry-run")
        assert dry[-1] == "1 dead letters to replay"
        assert admin(capsys, "dlq", "replay", "--group", vision, "--reason", "future-version")[-1] == (
            "1 dead letters replayed")
        wait_for(lambda: "future" in seen[vision], "the replayed event at the upgraded group", timeout_s=90)
        assert admin(capsys, "dlq", "replay", "--group", vision, "--reason", "future-version")[-1] == (
            "0 dead letters replayed"), "a second replay sent the message again"
        # Behind the replay in its partition: once the translator has this, it has passed the replay.
        publisher.publish_raw(topics.submissions, b"future", cancelled("sentinel", version=2), [])
        publisher.flush()
        wait_for(lambda: all("sentinel" in jobs for jobs in seen.values()), "the sentinel", timeout_s=90)
    assert seen == {vision: ["good", "future", "sentinel"], translator: ["good", "sentinel"]}
    states = {(row.split()[2], row.split()[3]): row.split()[1] for row in admin(capsys, "dlq", "list")[1:]}
    assert states[(vision, "future-version")] == "replayed"
    assert list(states.values()).count("replayed") == 1


class JobRescheduled(Event):
    """An event type of a release newer than this one."""

    event_type: ClassVar[str] = "JobRescheduled"

    rescheduled_at: str


def _of_a_newer_release(job_id: str, event_type: str = "JobCancelled", **added: object) -> bytes:
    doc = orjson.loads(cancelled(job_id))
    doc["type"] = event_type
    doc["data"] = {**doc["data"], **added}
    return bytes(orjson.dumps(doc))


def test_events_of_a_newer_release_are_read_or_kept_for_the_upgrade_never_taken_for_garbage(
        infra: Infra, settings: ServiceSettings, topics: TopicSettings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A rolling update or `rollout undo`: an older pod reads a newer one's events. A field the
    # newer release added to v1 (webhook_urls_total, usage: written as null when unset) and a type
    # it added were both dead-lettered `undecodable`: `dlq replay --all` left them out and the
    # runbook said to discard them, so their jobs never finished.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infra.kafka_bootstrap)
    monkeypatch.setenv("LOTLENS_TOPIC_DEAD_LETTER", topics.dead_letter)
    group = new_id("result-store-")
    seen: dict[str, list[str]] = {group: []}
    publisher = EventProducer(settings.kafka, "test")
    for key, value, event_type in (
            (b"grown", _of_a_newer_release("grown", cancelled_by=None), b"JobCancelled"),
            (b"grown-set", _of_a_newer_release("grown-set", cancelled_by={"user": "u"}), b"JobCancelled"),
            (b"new-type", _of_a_newer_release("new-type", "JobRescheduled", rescheduled_at="later"),
             b"JobRescheduled"),
            (b"junk", b"{not json", b"JobCancelled"),
            (b"good", cancelled("good"), b"JobCancelled")):
        publisher.publish_raw(topics.submissions, key, value, [("type", event_type)])
    publisher.flush()

    with consuming(settings, [group], seen):
        # Every event read or dead-lettered: the keys lie in different partitions, and one fetch
        # may bring `good` and the dead letters before the grown events' partition.
        wait_for(lambda: len(seen[group]) >= 3 and len(admin(capsys, "dlq", "list")) >= 3,
                 "three events read and two dead letters", timeout_s=90, every_s=0.2)
        assert sorted(seen[group]) == ["good", "grown", "grown-set"], "a field added to v1 was not read"
        rows = {row.split()[4]: row.split() for row in admin(capsys, "dlq", "list")[1:]}
        assert {event_type: row[3] for event_type, row in rows.items()} == {
            "JobRescheduled": "future-version", "JobCancelled": "undecodable"}

        dry = admin(capsys, "dlq", "replay", "--all", "--dry-run")
        assert any(rows["JobRescheduled"][0] in line for line in dry)
        assert dry[-1] == "1 dead letters to replay"

        # Upgraded, the consumer reads the new type: the replay brings it there.
        monkeypatch.setitem(EVENT_TYPES, JobRescheduled.event_type, JobRescheduled)
        assert admin(capsys, "dlq", "replay", "--all")[-1] == "1 dead letters replayed"
        wait_for(lambda: "new-type" in seen[group], "the replayed event of the new type", timeout_s=90)
