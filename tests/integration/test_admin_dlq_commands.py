"""`lotlens-admin dlq` run as its own process on a real broker: wrong input is an error with a
non-zero exit, a letter already handled says so, an undecodable one is not replayed only to die
again, and `discard` marks a dead letter handled with the operator's reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.dead_letter_support import cancelled, consuming
from tests.polling import wait_for

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Letters:
    """The dead-letter positions of one group's two dead letters, and the admin's environment."""

    env: dict[str, str]
    group: str
    junk: str  # undecodable
    poison: str  # handler-failed


def _rows(env: dict[str, str]) -> dict[str, list[str]]:
    done = run_admin(env, "dlq", "list")
    assert done.returncode == 0, done.stderr
    return {row.split()[0]: row.split() for row in done.stdout.splitlines()[1:]}


@pytest.fixture()
def letters(infra: Infra, settings: ServiceSettings, topics: TopicSettings) -> Iterator[Letters]:
    group = new_id("vision-")
    env = admin_env(infra.kafka_bootstrap, infra.database_url, topics)
    publisher = EventProducer(settings.kafka, "test")
    messages = ((b"junk", b"{not json"), (b"poison", cancelled("poison")), (b"good", cancelled("good")))
    for key, value in messages:
        publisher.publish_raw(topics.submissions, key, value, [("type", b"JobCancelled")])
    publisher.flush()
    seen: dict[str, list[str]] = {group: []}
    with consuming(settings, [group], seen):
        wait_for(lambda: "good" in seen[group] and len(_rows(env)) == 2, "two dead letters", timeout_s=90,
                 every_s=0.2)
    by_reason = {row[3]: position for position, row in _rows(env).items()}
    yield Letters(env, group, junk=by_reason["undecodable"], poison=by_reason["handler-failed"])


def _source_end(infra: Infra, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": infra.kafka_bootstrap, "group.id": new_id("ends-")})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3))
    finally:
        consumer.close()


def test_replay_of_a_position_or_group_that_is_not_there_is_an_error(letters: Letters) -> None:
    # Each printed "0 dead letters replayed" and exited 0: the operator took the typo for done.
    malformed = run_admin(letters.env, "dlq", "replay", "--position", "garbage", "--dry-run")
    assert malformed.returncode == 2 and "--position" in malformed.stderr, malformed
    missing = run_admin(letters.env, "dlq", "replay", "--position", "9:9")
    assert missing.returncode == 1 and "no dead letter at 9:9" in missing.stderr, missing
    typo = run_admin(letters.env, "dlq", "replay", "--group", "typo-group")
    assert typo.returncode == 1 and "typo-group" in typo.stderr, typo


def test_replaying_a_letter_again_says_it_was_already_replayed(letters: Letters) -> None:
    first = run_admin(letters.env, "dlq", "replay", "--position", letters.poison)
    assert first.returncode == 0 and first.stdout.splitlines()[-1] == "1 dead letters replayed", first
    again = run_admin(letters.env, "dlq", "replay", "--position", letters.poison)
    assert again.returncode == 0, again
    assert f"{letters.poison} was already replayed" in again.stdout + again.stderr, again
    assert again.stdout.splitlines()[-1] == "0 dead letters replayed"


def test_an_undecodable_letter_is_not_replayed_unless_forced(infra: Infra, letters: Letters,
                                                              topics: TopicSettings) -> None:
    # Replayed, it came straight back as a new dead letter and re-fired LotLensDeadLetters.
    end = _source_end(infra, topics.submissions)
    refused = run_admin(letters.env, "dlq", "replay", "--position", letters.junk)
    assert refused.returncode == 1, refused
    assert "undecodable" in refused.stderr and "discard" in refused.stderr and "--force" in refused.stderr
    assert _source_end(infra, topics.submissions) == end, "the undecodable message was sent again"
    assert _rows(letters.env)[letters.junk][1] == "open"

    everything = run_admin(letters.env, "dlq", "replay", "--all", "--dry-run")
    assert everything.returncode == 0, everything
    assert letters.poison in everything.stdout and letters.junk not in everything.stdout
    assert everything.stdout.splitlines()[-1] == "1 dead letters to replay"

    forced = run_admin(letters.env, "dlq", "replay", "--position", letters.junk, "--force")
    assert forced.returncode == 0 and forced.stdout.splitlines()[-1] == "1 dead letters replayed", forced
    assert _source_end(infra, topics.submissions) == end + 1


def test_a_discarded_letter_is_listed_as_discarded_with_its_reason_and_never_replayed(
        letters: Letters) -> None:
    # There was no way to mark real poison handled: it stayed open in `list` until retention.
    assert run_admin(letters.env, "dlq", "discard", letters.junk).returncode == 2  # a reason is required
    missing = run_admin(letters.env, "dlq", "discard", "9:9", "--reason", "typo")
    assert missing.returncode == 1 and "no dead letter at 9:9" in missing.stderr
    done = run_admin(letters.env, "dlq", "discard", letters.junk, "--reason", "a test tool's stray message")
    assert done.returncode == 0, done
    assert _rows(letters.env)[letters.junk][1] == "discarded"
    assert _rows(letters.env)[letters.poison][1] == "open"
    shown = run_admin(letters.env, "dlq", "show", letters.junk)
    assert '"state": "discarded"' in shown.stdout, shown.stdout
    assert "a test tool's stray message" in shown.stdout
    forced = run_admin(letters.env, "dlq", "replay", "--position", letters.junk, "--force")
    assert forced.stdout.splitlines()[-1] == "0 dead letters replayed", forced
    assert f"{letters.junk} was already discarded" in forced.stdout + forced.stderr
    again = run_admin(letters.env, "dlq", "discard", letters.junk, "--reason", "twice")
    assert again.returncode == 0 and "already discarded" in again.stdout + again.stderr


def test_the_listing_filters_by_state_and_names_each_letters_state(letters: Letters) -> None:
    # `dlq list` had no state filter: with hundreds of replayed and discarded letters the open
    # ones were lost among them. The state column read `dead` for a letter waiting for an
    # operator (every dead letter is dead); it reads `open`, the word `--state` takes.
    assert run_admin(letters.env, "dlq", "discard", letters.junk, "--reason", "stray").returncode == 0
    everything = _rows(letters.env)
    assert {position: row[1] for position, row in everything.items()} == {
        letters.junk: "discarded", letters.poison: "open"}

    for state, expected in (("open", [letters.poison]), ("discarded", [letters.junk]), ("replayed", [])):
        done = run_admin(letters.env, "dlq", "list", "--state", state)
        assert done.returncode == 0, done.stderr
        header, *rows = done.stdout.splitlines()
        assert header.split()[:2] == ["POSITION", "STATE"]
        assert [row.split()[0] for row in rows] == expected, (state, done.stdout)
        assert all(row.split()[1] == state for row in rows)
    mixed = run_admin(letters.env, "dlq", "list", "--state", "open", "--group", letters.group)
    assert [row.split()[0] for row in mixed.stdout.splitlines()[1:]] == [letters.poison]

    wrong = run_admin(letters.env, "dlq", "list", "--state", "dead")
    assert (wrong.returncode, wrong.stdout) == (2, ""), wrong
    assert "--state" in wrong.stderr and "open" in wrong.stderr


def test_the_listing_as_json_gives_scripts_each_letter_with_its_error(letters: Letters) -> None:
    # `dlq list` printed columns only: a script had to split them (a job id or group with a space
    # would shift every column after it) and call `dlq show` once per letter to read its error.
    done = run_admin(letters.env, "dlq", "list", "--json", "--state", "open")
    assert done.returncode == 0, done.stderr
    listed = {letter["position"]: letter for letter in json.loads(done.stdout)}
    assert set(listed) == {letters.junk, letters.poison}
    poison = listed[letters.poison]
    assert (poison["state"], poison["group"], poison["reason"], poison["type"], poison["job"]) == (
        "open", letters.group, "handler-failed", "JobCancelled", "poison")
    assert poison["source"].startswith(letters.env["LOTLENS_TOPIC_SUBMISSIONS"] + ":")
    assert poison["error"], poison
    assert listed[letters.junk]["reason"] == "undecodable"

    assert run_admin(letters.env, "dlq", "discard", letters.junk, "--reason", "stray").returncode == 0
    still_open = run_admin(letters.env, "dlq", "list", "--json", "--state", "open")
    assert [letter["position"] for letter in json.loads(still_open.stdout)] == [letters.poison]


def test_a_future_version_letter_is_discarded_only_when_forced(
        infra: Infra, settings: ServiceSettings, topics: TopicSettings) -> None:
    # The RUNBOOK says never to discard one (its job waits for it, replayed once the newer release
    # is out), yet `discard` marked it at once, for good: `replay --force` leaves a discarded
    # letter out, so a mistyped position lost a job's event with no way back.
    group, env = new_id("vision-"), admin_env(infra.kafka_bootstrap, infra.database_url, topics)
    publisher = EventProducer(settings.kafka, "test")
    for key, value in ((b"future", cancelled("future", version=2)), (b"good", cancelled("good"))):
        publisher.publish_raw(topics.submissions, key, value, [("type", b"JobCancelled")])
    publisher.flush()
    seen: dict[str, list[str]] = {group: []}
    with consuming(settings, [group], seen):
        wait_for(lambda: "good" in seen[group] and len(_rows(env)) == 1, "the future version's dead letter",
                 timeout_s=90, every_s=0.2)
    [(future, row)] = _rows(env).items()
    assert row[3] == "future-version", row

    refused = run_admin(env, "dlq", "discard", future, "--reason", "cleaning up")
    assert refused.returncode == 1, refused
    assert "future-version" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert _rows(env)[future][1] == "open"
    forced = run_admin(env, "dlq", "discard", future, "--reason", "a rogue event", "--force")
    assert forced.returncode == 0, forced
    assert _rows(env)[future][1] == "discarded"
