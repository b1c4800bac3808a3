"""The result-store's batch walks as Python loops, the way they were before the walks in C
(`grouping.py`, `JobChanges.touch_all`, `projections.project`, `handlers.apply_batch`): the
reference the fast paths are held to (tests/unit/test_result_store_grouping_fast_paths.py,
tests/integration/result_store/test_projection_fast_paths.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection

from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    Event,
    JobCompleted,
    LotFailed,
    TranslationCompleted,
    VisionCompleted,
)
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.completion import refresh_cancelled_usage, settle_jobs
from lotlens_result_store.grouping import Key, event_of
from lotlens_result_store.projections import PROJECTIONS, _runs, advance_described_jobs, write_job_changes


def latest_envelopes(envelopes: Sequence[Envelope], event_type: type[Event],
                     key: Callable[[Any], Key]) -> list[Envelope]:
    """One envelope per natural key, the last one of the batch, in key order."""
    latest: dict[Key, Envelope] = {}
    for envelope in envelopes:
        latest[key(event_of(envelope, event_type))] = envelope
    return [latest[k] for k in sorted(latest)]


def latest_events(envelopes: Sequence[Envelope], event_type: type[Event],
                  key: Callable[[Any], Key]) -> list[Event]:
    """One event per natural key: the last one of the batch."""
    return [event_of(e, event_type) for e in latest_envelopes(envelopes, event_type, key)]


def events_of(envelopes: Sequence[Envelope], event_type: type[Event]) -> list[Event]:
    """Each envelope's event, checked."""
    return [event_of(envelope, event_type) for envelope in envelopes]


def groups(run: Sequence[Envelope]) -> dict[type[Event], list[Envelope]]:
    """The run's envelopes per event type."""
    by_type: dict[type[Event], list[Envelope]] = {}
    for envelope in run:
        by_type.setdefault(type(envelope.event), []).append(envelope)
    return by_type


def touch_all(changes: JobChanges, envelopes: Sequence[Envelope], status: str = "pending",
              total_lots: bool = False) -> None:
    """Each envelope touched on its own, with its event's total when asked."""
    for envelope in envelopes:
        changes.touch(envelope, envelope.event.total_lots if total_lots else None,  # type: ignore[attr-defined]
                      status=status)


def project(conn: Connection, envelopes: Sequence[Envelope]) -> JobChanges:
    """The batch cut into runs, each grouped and projected."""
    changes = JobChanges()
    for run in _runs(envelopes):
        by_type = groups(run)
        for event_type, projection in PROJECTIONS.items():
            if group := by_type.get(event_type):
                projection(conn, group, changes)
    write_job_changes(conn, changes)
    return changes


def apply_batch(conn: Connection, envelopes: Sequence[Envelope], live: bool = False) -> list[str]:
    """Project, advance, settle and refresh as `handlers.apply_batch` did."""
    changes = project(conn, envelopes)
    advance_described_jobs(conn, [envelope.job_id for envelope in envelopes
                                  if isinstance(envelope.event, VisionCompleted | LotFailed)])
    unannounced = settle_jobs(conn, changes, accepted_cancels=live)
    refresh_cancelled_usage(conn, {envelope.job_id for envelope in envelopes if isinstance(
        envelope.event, VisionCompleted | TranslationCompleted | LotFailed | JobCompleted)})
    return unannounced
