"""Generated histories of a few jobs, and the orders the log may deliver them in (hypothesis).

A history is what the other services publish for each job, per topic, in that topic's order
(`job_history`). `Delivery` hands it to a consumer batch by batch as Kafka may: one job's events
on one topic in order, the topics (and jobs) interleaved arbitrarily, any event delivered again
later (a producer that republished after a restart, a batch redelivered), and an event taken out
of its topic's order to come back later (dead-lettered, then replayed).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import strategies as st

from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    Event,
    JobCancelled,
    JobSubmitted,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
)
from lotlens_common.model.usage import Usage
from tests.conftest import new_id
from tests.integration.result_store.support import HOOK, IMAGES_PER_LOT

# The record topics the job events travel on, in the order a canonical replay reads them.
TOPICS = ("submissions", "vision", "translation", "completions")
Outcome = Literal["described", "vision_failed", "translation_failed", "in_vision", "in_translation",
                  "failed_then_translated", "translated_then_failed"]
# A lot still `in_vision` or `in_translation` when the history ends leaves its job running (unless
# the job is cancelled): running jobs must read alike too. The last two settle a lot twice on the
# translation topic (a late answer of a retried batch): its first settling event there must win,
# however the topic is cut into consumer batches.
OUTCOMES: tuple[Outcome, ...] = ("described", "vision_failed", "translation_failed", "in_vision",
                                 "in_translation", "failed_then_translated", "translated_then_failed")
Stream = tuple[str, str]  # (job id, topic): what Kafka keeps in order


@dataclass(frozen=True)
class LotPlan:
    """How far one lot gets, and whether its answers report their usage."""

    outcome: Outcome
    with_usage: bool


@dataclass(frozen=True)
class JobPlan:
    """One job: its lots, languages, whether the client cancels it, and the order each stage emits."""

    lots: tuple[LotPlan, ...]
    languages: tuple[str, ...]
    cancelled: bool
    vision_order: tuple[int, ...]
    translation_order: tuple[int, ...]


@st.composite
def job_plans(draw: st.DrawFn, max_lots: int = 3) -> JobPlan:
    """A job of 1 to `max_lots` lots."""
    lots = tuple(draw(st.lists(st.builds(LotPlan, st.sampled_from(OUTCOMES), st.booleans()),
                               min_size=1, max_size=max_lots)))
    positions = list(range(len(lots)))
    return JobPlan(lots, draw(st.sampled_from([("en",), ("en", "ru")])), draw(st.booleans()),
                   tuple(draw(st.permutations(positions))), tuple(draw(st.permutations(positions))))


VISION_USAGE = Usage(input_tokens=1000, output_tokens=200, estimated_cost_usd=0.002, model="o4-mini")
TRANSLATION_USAGE = Usage(input_tokens=300, output_tokens=400, estimated_cost_usd=0.001, model="gpt-4.1-mini")


def job_history(plan: JobPlan) -> dict[Stream, list[Envelope]]:
    """Every event the services publish for a job of `plan`, per stream, in the stream's order.

    Event times follow the pipeline (submissions, then vision, then translation), the cancel's
    after the submissions: what `occurred_at` a job's rows and its announcement take must not
    depend on the order the topics are read in.
    """
    job_id, client_id = new_id("job-"), new_id("client-")
    total = len(plan.lots)
    lot_ids = [f"lot-{i}" for i in range(total)]
    clock = iter(datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(1000))

    def envelope(event: Event) -> Envelope:
        return Envelope(event=event, client_id=client_id, occurred_at=next(clock))

    created = datetime(2026, 3, 1, tzinfo=UTC)
    submissions = [envelope(JobSubmitted(
        job_id=job_id, client_id=client_id, api_version="2.0", languages=plan.languages, total_lots=total,
        webhook_urls=(HOOK,), created_at=created, estimated_completion=created + timedelta(hours=2)))]
    submissions += [envelope(LotSubmitted(
        job_id=job_id, lot_id=lot_id, seq=seq, total_lots=total, additional_info=f"car {seq}",
        image_urls=tuple(f"https://img.example.com/{lot_id}/{i}.jpg" for i in range(IMAGES_PER_LOT)),
        languages=plan.languages, webhook=HOOK)) for seq, lot_id in enumerate(lot_ids)]
    if plan.cancelled:
        submissions.append(envelope(JobCancelled(job_id=job_id, cancelled_at=next(clock))))
    broken = "https://img.example.com/{}/0.jpg"
    vision = [envelope(VisionBatchSubmitted(job_id=job_id, shard_id=f"{job_id}-v1", attempt=1,
                                            batch_id=f"batch_v_{job_id}", lot_ids=tuple(lot_ids)))]
    described = []
    for i in plan.vision_order:
        lot, lot_id = plan.lots[i], lot_ids[i]
        if lot.outcome == "vision_failed":
            vision.append(envelope(LotFailed(
                job_id=job_id, lot_id=lot_id, stage="vision", total_lots=total,
                reason="none of the lot's images could be fetched", missing_images=(broken.format(lot_id),))))
        elif lot.outcome != "in_vision":
            described.append(i)
            vision.append(envelope(VisionCompleted(
                job_id=job_id, lot_id=lot_id, english_html=f"<p>{lot_id}</p>", languages=plan.languages,
                total_lots=total, processed_images=IMAGES_PER_LOT - 1,
                missing_images=(broken.format(lot_id),), usage=VISION_USAGE if lot.with_usage else None)))
    translation = []
    if described:
        translation.append(envelope(TranslationBatchSubmitted(
            job_id=job_id, shard_id=f"{job_id}-t1", attempt=1, batch_id=f"batch_t_{job_id}",
            lot_ids=tuple(lot_ids[i] for i in described))))

    def failed(lot_id: str) -> LotFailed:
        return LotFailed(job_id=job_id, lot_id=lot_id, stage="translation", total_lots=total,
                         reason="the translation failed", processed_images=IMAGES_PER_LOT - 1,
                         # the vision result's, as the translator sends
                         missing_images=(broken.format(lot_id),))

    def translated(lot: LotPlan, lot_id: str) -> TranslationCompleted:
        return TranslationCompleted(
            job_id=job_id, lot_id=lot_id,
            descriptions={language: f"<p>{lot_id} {language}</p>" for language in plan.languages},
            usage=TRANSLATION_USAGE if lot.with_usage else None)

    late: list[Event] = []  # the second settling event of a lot settled twice, after the others
    for i in plan.translation_order:
        lot, lot_id = plan.lots[i], lot_ids[i]
        if i not in described or lot.outcome == "in_translation":
            continue
        if lot.outcome in ("translation_failed", "failed_then_translated"):
            translation.append(envelope(failed(lot_id)))
        else:
            translation.append(envelope(translated(lot, lot_id)))
        if lot.outcome == "failed_then_translated":
            late.append(translated(lot, lot_id))
        elif lot.outcome == "translated_then_failed":
            late.append(failed(lot_id))
    translation += [envelope(event) for event in late]
    return {(job_id, "submissions"): submissions, (job_id, "vision"): vision,
            (job_id, "translation"): translation, (job_id, "completions"): []}


# What the next slot of a batch holds. Hypothesis shrinks towards the first: the next event of
# the first stream with one waiting, so a shrunk counterexample keeps only the disorder it needs.
NEXT, AGAIN, DEAD_LETTERED, REPLAYED = "next", "again", "dead-lettered", "replayed"
_SLOTS = st.sampled_from([NEXT] * 6 + [AGAIN, DEAD_LETTERED, REPLAYED])


class Delivery:
    """The log, delivered to one consumer batch after another in an order Hypothesis draws."""

    def __init__(self, streams: dict[Stream, list[Envelope]]) -> None:
        self.log = {stream: list(events) for stream, events in streams.items()}
        self._waiting = {stream: deque(events) for stream, events in streams.items()}
        self._delivered: list[Envelope] = []
        self._dead_letters: list[Envelope] = []
        # A lot settled twice is settled by the first of the two its topic holds; one of them
        # dead-lettered and replayed after the other reverses their order for the live store alone
        # (the rebuild reads the original in its place), so the two may then differ by design.
        settling = Counter(_settled_lot(envelope) for events in streams.values() for envelope in events)
        self._kept_in_order = {lot for lot, count in settling.items() if lot and count > 1}

    def publish(self, stream: Stream, envelope: Envelope) -> None:
        """An event published while the history is delivered (the result-store's JobCompleted)."""
        self.log[stream].append(envelope)
        self._waiting[stream].append(envelope)

    def next_batch(self, data: st.DataObject) -> list[Envelope] | None:
        """The next consumer batch (1 to 6 events), or None once everything was delivered."""
        batch: list[Envelope] = []
        size = data.draw(st.integers(1, 6), label="batch size")
        while len(batch) < size:  # a slot that dead-letters its event delivers none
            # In the history's order, not by the random job ids: a drawn index picks the same stream
            # again when Hypothesis replays an example.
            streams = [stream for stream, waiting in self._waiting.items() if waiting]
            if not streams and not self._dead_letters:
                break
            slot = data.draw(_SLOTS, label="slot")
            if slot == AGAIN and self._delivered:
                batch.append(data.draw(st.sampled_from(self._delivered), label="delivered again"))
            elif (slot == REPLAYED or not streams) and self._dead_letters:
                batch.append(self._dead_letters.pop(data.draw(st.integers(0, len(self._dead_letters) - 1))))
            elif streams:
                head = self._waiting[data.draw(st.sampled_from(streams), label="stream")].popleft()
                if slot == DEAD_LETTERED and _settled_lot(head) not in self._kept_in_order:
                    self._dead_letters.append(head)
                    continue
                batch.append(head)
        self._delivered += batch
        return batch or None

    def canonical(self) -> list[list[Envelope]]:
        """The log replayed as a rebuild reads it: one batch per topic in `TOPICS` order, every
        job's events of that topic in order, each event once."""
        return [list({envelope.event_id: envelope for (_, stream_topic), events in self.log.items()
                      if stream_topic == topic for envelope in events}.values()) for topic in TOPICS]


def _settled_lot(envelope: Envelope) -> tuple[str, str] | None:
    """The lot the event settles (completes or fails), if it settles one."""
    event = envelope.event
    return (event.job_id, event.lot_id) if isinstance(event, TranslationCompleted | LotFailed) else None


# --- seeded batches (tests that hold a fast path to the general one, batch by batch) ---

def random_plan(rng: random.Random) -> JobPlan:
    """A job of 1-12 lots of any outcomes, sometimes cancelled, each stage emitting in its own order."""
    lots = tuple(LotPlan(rng.choice(OUTCOMES), rng.random() < 0.7) for _ in range(rng.randint(1, 12)))
    positions = list(range(len(lots)))
    return JobPlan(lots, rng.choice([("en",), ("en", "ru")]), rng.random() < 0.2,
                   tuple(rng.sample(positions, len(positions))), tuple(rng.sample(positions, len(positions))))


def deliveries(rng: random.Random, jobs: int) -> Iterator[list[Envelope]]:
    """Consumer batches of the jobs' histories: streams interleaved, copies, events out of order."""
    histories = [job_history(random_plan(rng)) for _ in range(jobs)]
    waiting = [list(events) for history in histories for events in history.values() if events]
    delivered: list[Envelope] = []
    while any(waiting):
        batch: list[Envelope] = []
        for _ in range(rng.randint(1, 15)):
            streams = [stream for stream in waiting if stream]
            if delivered and (rng.random() < 0.1 or not streams):
                batch.append(rng.choice(delivered))  # delivered again (a replay, a re-delivered batch)
            elif streams:
                stream = rng.choice(streams)
                batch.append(stream.pop(rng.randrange(min(len(stream), 3))))  # now and then out of order
        if rng.random() < 0.2:
            batch += batch[: rng.randint(1, len(batch))]  # the same events twice in one batch
        delivered += batch
        yield batch
