"""The stage's hold after OpenAI's enqueued-token queue refused a batch, on `stage_queue_holds`:
one row a stage, so every instance of it holds back, and the next process too
(`stage/core/queue_hold.py` decides; times are the database's, which every instance shares).
`lotlens-admin` lists each stage's refusals in a row and hold (`refusal_series`) and ends a hold (`end`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, text

from lotlens_common.stage.core.queue_hold import HeldNow, QueueHold

T = TypeVar("T")

# The stage's row (none before its first refusal), with the database's now.
READ = """
    SELECT refusals, extract(epoch FROM refused_at) AS refused_at,
           extract(epoch FROM held_until) AS until, extract(epoch FROM now()) AS now_s
      FROM stage_queue_holds WHERE stage = :stage"""


def held(conn: Connection, stage: str) -> HeldNow:
    """How long the stage's new batches are still held back, and after how many refusals in a row
    (one row read by its key)."""
    return held_now(conn.execute(text(READ), {"stage": stage}).one_or_none())


def held_now(row: Row[Any] | None) -> HeldNow:
    """The hold as a row `READ` read says (None, or its columns null: there is no hold)."""
    return HeldNow(0.0, 0) if row is None or row.refusals is None else _hold(row).now(float(row.now_s))


def change(conn: Connection, stage: str, step: Callable[[QueueHold, float], T], start: bool) -> T | None:
    """Apply `step` to the stage's hold (with now, a Unix time) and save it if it changed; what
    `step` returned. Without a row, None unless `start` makes one.

    Read first without a lock: most calls (every admitted batch read) change nothing, and a row
    lock is a write. One that would change it goes again under the row's lock, so instances
    collecting refusals at once take turns, each seeing the one before's.
    """
    row = conn.execute(text(READ), {"stage": stage}).one_or_none()
    if row is None and not start:
        return None
    if row is not None:
        hold = _hold(row)
        outcome = step(hold, float(row.now_s))
        if hold == _hold(row):
            return outcome
    if row is None:  # the stage's first refusal: a row that holds none yet, to lock
        conn.execute(text("""
            INSERT INTO stage_queue_holds (stage, refusals, refused_at, held_until)
            VALUES (:stage, 0, to_timestamp(0), to_timestamp(0)) ON CONFLICT (stage) DO NOTHING"""),
            {"stage": stage})
    row = conn.execute(text(READ + " FOR UPDATE"), {"stage": stage}).one()
    hold = _hold(row)
    outcome = step(hold, float(row.now_s))
    conn.execute(text("""
        UPDATE stage_queue_holds
           SET refusals = :refusals, refused_at = to_timestamp(:refused_at),
               held_until = to_timestamp(:until), updated_at = now()
         WHERE stage = :stage"""),
        {"stage": stage, "refusals": hold.refusals, "refused_at": hold.refused_at, "until": hold.until})
    return outcome


@dataclass(frozen=True)
class RefusalSeries:
    """A stage's batches refused in a row by the queue, as on-call reads it: after how many, the
    last when, and the hold: until when, whether in force (`held`), the seconds it has left (0
    between two holds, while the next try is built and sent: the series, which the alert reads,
    stays until a batch is admitted)."""

    stage: str
    held_until: datetime
    refusals: int
    left_s: float
    refused_at: datetime  # the last refusal, or the operator's release since (`released`)
    held: bool

    @property
    def released(self) -> bool:
        """Whether an operator ended the last hold (`end` stamps both times alike; a refusal holds
        a minute at least)."""
        return self.held_until <= self.refused_at


# The one reading of the series for every view: the condition the alert reads (`refusals > 0`),
# and a hold in force whatever the count (admitted batches end the series, not the hold).
_SERIES = """
    SELECT stage, held_until, refusals, refused_at, held_until > now() AS held,
           greatest(extract(epoch FROM held_until - now()), 0) AS left_s
      FROM stage_queue_holds WHERE (refusals > 0 OR held_until > now())"""


def refusal_series(conn: Connection, stage: str | None = None) -> list[RefusalSeries]:
    """Every stage's series of refusals or hold in force now (only `stage`'s, given one), by stage."""
    where = "" if stage is None else " AND stage = :stage"
    rows = conn.execute(text(_SERIES + where + " ORDER BY stage"), {"stage": stage})
    return [_series(row) for row in rows]


def end(conn: Connection, stage: str) -> RefusalSeries | None:
    """End the stage's hold in force now, for every instance (an operator's decision); the series
    as it was (not `held`: there was no hold to end, only the series), None if neither. The refusals
    in a row are kept: a try refused again holds twice as long, and a batch admitted ends the
    series, as after a hold that ran out. A batch created before the release counts as one in
    flight at a refusal: created while the queue was known full, its refusal would have brought the
    hold back at once, longer (it was a refusal "since")."""
    row = conn.execute(text(_SERIES + " AND stage = :stage FOR UPDATE"), {"stage": stage}).one_or_none()
    if row is not None and row.held:
        conn.execute(text("""
            UPDATE stage_queue_holds SET held_until = now(), refused_at = now(), updated_at = now()
             WHERE stage = :stage"""),
            {"stage": stage})
    return None if row is None else _series(row)


def _series(row: Row[Any]) -> RefusalSeries:
    return RefusalSeries(str(row.stage), row.held_until, int(row.refusals), float(row.left_s), row.refused_at,
                         bool(row.held))


def _hold(row: Row[Any]) -> QueueHold:
    return QueueHold(int(row.refusals), float(row.refused_at), float(row.until))
