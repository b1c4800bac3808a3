"""The result-store's batch walks in C keep every answer of the Python loops they replaced
(tests/result_store_reference.py): the latest event per natural key, a batch's groups and runs,
the jobs of some event types, and each job's change, over seeded batches of several jobs and event
types with copies, replays, lots settled twice and out-of-order times (some equal, in other zones)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    Event,
    JobCancelled,
    JobCompleted,
    LotFailed,
    LotSubmitted,
    TranslationCompleted,
    VisionCompleted,
)
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.grouping import (
    LOT,
    by_type,
    event_of,
    events_of,
    latest_envelopes,
    latest_events,
    settled_once,
)
from lotlens_result_store.handlers import _job_ids
from lotlens_result_store.projections import _runs
from tests import result_store_reference as reference

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ZONES = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)))


# --- seeded batches ---

def random_batch(rng: random.Random) -> list[Envelope]:
    jobs = [f"job-{n}" for n in range(rng.choice((1, 1, 1, 2, 3)))]
    made: list[Envelope] = []
    for _ in range(rng.randint(0, 60)):
        if made and rng.random() < 0.15:  # a copy, delivered again
            made.append(rng.choice(made))
            continue
        job, lot = rng.choice(jobs), f"lot-{rng.randint(0, 9)}"
        total = rng.choice((0, 10, 10, 12))
        at = (T0 + timedelta(seconds=rng.randint(0, 5))).astimezone(rng.choice(ZONES))
        event: Event = rng.choice((
            LotSubmitted(job_id=job, lot_id=lot, seq=0, total_lots=total, additional_info="",
                         image_urls=(), languages=("en",)),
            VisionCompleted(job_id=job, lot_id=lot, english_html="<p>x</p>", languages=("en",),
                            total_lots=total, processed_images=1, missing_images=()),
            TranslationCompleted(job_id=job, lot_id=lot, descriptions={"en": "<p>x</p>"}),
            LotFailed(job_id=job, lot_id=lot, stage="translation", total_lots=total, reason="r"),
            JobCancelled(job_id=job, cancelled_at=T0),
        ))
        made.append(Envelope(event=event, client_id=f"client-{rng.randint(0, 2)}", occurred_at=at))
    return made


def of_type(envelopes: list[Envelope], event_type: type[Event]) -> list[Envelope]:
    return [envelope for envelope in envelopes if type(envelope.event) is event_type]


SEEDS = range(250)


@pytest.mark.parametrize("event_type", [LotSubmitted, VisionCompleted, TranslationCompleted, LotFailed])
def test_the_latest_envelope_per_lot_is_the_one_the_loop_kept(event_type: type[Event]) -> None:
    for seed in SEEDS:
        group = of_type(random_batch(random.Random(seed)), event_type)
        expected = reference.latest_envelopes(group, event_type, LOT)
        assert latest_envelopes(group, event_type, LOT) == expected
        assert latest_events(group, event_type, LOT) == [envelope.event for envelope in expected]


def test_an_event_of_another_type_is_refused_naming_the_first_one_as_before() -> None:
    batch = [envelope for seed in SEEDS for envelope in random_batch(random.Random(seed))]
    for event_type in (LotSubmitted, VisionCompleted):
        with pytest.raises(TypeError) as expected:
            [event_of(envelope, event_type) for envelope in batch]
        with pytest.raises(TypeError) as found:
            events_of(batch, event_type)
        assert str(found.value) == str(expected.value)


def test_the_batch_is_grouped_and_cut_into_runs_as_the_loop_did() -> None:
    twice = 0
    for seed in SEEDS:
        batch = random_batch(random.Random(seed))
        expected = [reference.groups(run) for run in _runs(batch)]
        groups = by_type(batch)
        assert groups == reference.groups(batch)
        assert list(groups) == list(reference.groups(batch))
        assert settled_once(groups) == (len(expected) == 1)
        twice += not settled_once(groups)
    assert twice > 50, "lots settled twice in a batch are drawn too"


def test_the_jobs_of_some_event_types_are_the_ones_the_loop_found() -> None:
    for seed in SEEDS:
        batch = random_batch(random.Random(seed))
        for event_types in ((VisionCompleted, LotFailed),
                            (VisionCompleted, TranslationCompleted, LotFailed, JobCompleted)):
            expected = {envelope.job_id for envelope in batch if isinstance(envelope.event, event_types)}
            found = _job_ids(by_type(batch), event_types)
            assert sorted(found) == sorted(expected)


@pytest.mark.parametrize(("event_type", "total_lots"), [
    (LotSubmitted, True), (VisionCompleted, True), (LotFailed, True), (TranslationCompleted, False),
    (LotSubmitted, False)])
@pytest.mark.parametrize("status", ["pending", "processing", "translating", "cancelled"])
def test_each_jobs_change_is_the_one_touching_each_envelope_made(event_type: type[Event], total_lots: bool,
                                                                 status: str) -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        batch = random_batch(rng)
        before = rng.sample(batch, min(len(batch), rng.randint(0, 2)))  # jobs an earlier group touched
        expected, found = JobChanges(), JobChanges()
        for changes in (expected, found):
            for envelope in before:
                changes.touch(envelope, 7, status="translating")
        group = of_type(batch, event_type)
        reference.touch_all(expected, group, status, total_lots)
        found.touch_all(group, status=status, total_lots=total_lots)
        assert found.items() == expected.items()
        # The very datetime kept, not one equal to it: its offset is what JSON writes.
        assert [str(change.last_event_at) for _, change in found.items()] == \
            [str(change.last_event_at) for _, change in expected.items()]
