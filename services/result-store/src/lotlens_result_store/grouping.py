"""Typed access to a batch's events, and de-duplication by natural key before a set-based write.

One `INSERT … ON CONFLICT DO UPDATE` may not touch the same row twice, and a consumer batch can
hold the same event twice (at-least-once delivery), so each projection keeps one event per key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias, TypeVar

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event

E = TypeVar("E", bound=Event)
# A row's natural key, e.g. (job id, lot id).
Key: TypeAlias = tuple[str, ...] | tuple[str, int]


def event_of(envelope: Envelope, event_type: type[E]) -> E:
    """The envelope's event, checked to be of the type the projection handles."""
    event = envelope.event
    if not isinstance(event, event_type):
        raise TypeError(f"{event_type.__name__} expected, got {type(event).__name__}")
    return event


def latest_envelopes(envelopes: Sequence[Envelope], event_type: type[E],
                     key: Callable[[E], Key]) -> list[Envelope]:
    """One envelope per natural key, the last one of the batch, in key order.

    Key order is lock order: two consumers writing overlapping rows (a job's vision and
    translation partitions may be assigned to different instances) take their locks in the same
    order instead of deadlocking.
    """
    latest: dict[Key, Envelope] = {}
    for envelope in envelopes:
        latest[key(event_of(envelope, event_type))] = envelope
    return [latest[k] for k in sorted(latest)]


def latest_events(envelopes: Sequence[Envelope], event_type: type[E],
                  key: Callable[[E], Key]) -> list[E]:
    """One event per natural key: the last one of the batch."""
    return [event_of(e, event_type) for e in latest_envelopes(envelopes, event_type, key)]
