"""Typed access to a batch's events, and de-duplication by natural key before a set-based write.

One `INSERT … ON CONFLICT DO UPDATE` may not touch the same row twice, and a consumer batch can
hold the same event twice (at-least-once delivery), so each projection keeps one event per key.

A batch is up to 1,000 events, a 50,000-lot job 150,000 of them at this store: the walks over a
batch here go through `map`, `attrgetter` and `compress` (C) rather than a Python loop a pass,
with a Python fallback only where a batch is unusual (several jobs, a lot settled twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import attrgetter, is_
from typing import TypeAlias, TypeVar

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event, LotFailed, TranslationCompleted

E = TypeVar("E", bound=Event)
# A row's natural key, e.g. (job id, lot id).
Key: TypeAlias = tuple[str, ...] | tuple[str, int]

EVENT = attrgetter("event")
JOB_ID = attrgetter("event.job_id")  # `Envelope.job_id`, without a property call an event
# A lot-level event's natural key, as `(event.job_id, event.lot_id)`.
LOT: Callable[[Event], Key] = attrgetter("job_id", "lot_id")
_SETTLED_LOT = attrgetter("event.job_id", "event.lot_id")
_EVENT_ID = attrgetter("event_id")


def event_of(envelope: Envelope, event_type: type[E]) -> E:
    """The envelope's event, checked to be of the type the projection handles."""
    event = envelope.event
    if not isinstance(event, event_type):
        raise TypeError(f"{event_type.__name__} expected, got {type(event).__name__}")
    return event


def events_of(envelopes: Sequence[Envelope], event_type: type[E]) -> list[E]:
    """The envelopes' events, each checked as `event_of` checks it."""
    events: list[E] = list(map(EVENT, envelopes))
    if not all(issubclass(found, event_type) for found in set(map(type, events))):
        return [event_of(envelope, event_type) for envelope in envelopes]  # raises for the first
    return events


def latest_envelopes(envelopes: Sequence[Envelope], event_type: type[E],
                     key: Callable[[E], Key]) -> list[Envelope]:
    """One envelope per natural key, the last one of the batch, in key order.

    Key order is lock order: two consumers writing overlapping rows (a job's vision and
    translation partitions may be assigned to different instances) take their locks in the same
    order instead of deadlocking.
    """
    # A later envelope of a key replaces the earlier one.
    latest = dict(zip(map(key, events_of(envelopes, event_type)), envelopes, strict=True))
    return [latest[k] for k in sorted(latest)]


def latest_events(envelopes: Sequence[Envelope], event_type: type[E],
                  key: Callable[[E], Key]) -> list[E]:
    """One event per natural key: the last one of the batch."""
    return list(map(EVENT, latest_envelopes(envelopes, event_type, key)))


def by_type(envelopes: Sequence[Envelope]) -> dict[type[Event], list[Envelope]]:
    """The envelopes of each event type (exactly), in the batch's order, types in first-seen order."""
    types = list(map(type, map(EVENT, envelopes)))
    return {event_type: list(compress(envelopes, map(is_, types, repeat(event_type))))
            for event_type in dict.fromkeys(types)}


def settled_once(groups: dict[type[Event], list[Envelope]]) -> bool:
    """Whether no lot of the batch is settled by two different events (copies are one event)."""
    settling = [*groups.get(TranslationCompleted, ()), *groups.get(LotFailed, ())]
    lots = list(map(_SETTLED_LOT, settling))
    return len(set(lots)) == len(set(zip(lots, map(_EVENT_ID, settling), strict=True)))
