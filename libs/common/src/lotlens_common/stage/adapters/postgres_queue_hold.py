"""The stage's hold after OpenAI's enqueued-token queue refused a batch, on `stage_queue_holds`:
one row a stage, so every instance of it holds back, and the next process too
(`stage/core/queue_hold.py` decides; times are the database's, which every instance shares).
`lotlens-admin` lists the holds in force (`in_force`) and ends one (`end`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, text

from lotlens_common.stage.core.queue_hold import HeldNow, QueueHold

T = TypeVar("T")

_READ = """
    SELECT refusals, extract(epoch FROM refused_at) AS refused_at,
           extract(epoch FROM held_until) AS until, extract(epoch FROM now()) AS now_s
      FROM stage_queue_holds WHERE stage = :stage"""


def held(conn: Connection, stage: str) -> HeldNow:
    """How long the stage's new batches are still held back, and after how many refusals in a row
    (one row read by its key)."""
    row = conn.execute(text(_READ), {"stage": stage}).one_or_none()
    return HeldNow(0.0, 0) if row is None else _hold(row).now(float(row.now_s))


def change(conn: Connection, stage: str, step: Callable[[QueueHold, float], T], start: bool) -> T | None:
    """Apply `step` to the stage's hold (with now, a Unix time) and save it if it changed; what
    `step` returned. Without a row, None unless `start` makes one.

    Read first without a lock: most calls (every admitted batch read) change nothing, and a row
    lock is a write. One that would change it goes again under the row's lock, so instances
    collecting refusals at once take turns, each seeing the one before's.
    """
    row = conn.execute(text(_READ), {"stage": stage}).one_or_none()
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
    row = conn.execute(text(_READ + " FOR UPDATE"), {"stage": stage}).one()
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
class HoldInForce:
    """A stage's hold as on-call reads it: until when, after how many refusals in a row, and the
    seconds it has left."""

    stage: str
    held_until: datetime
    refusals: int
    left_s: float


_IN_FORCE = """
    SELECT stage, held_until, refusals, extract(epoch FROM held_until - now()) AS left_s
      FROM stage_queue_holds WHERE held_until > now()"""


def in_force(conn: Connection) -> list[HoldInForce]:
    """Every stage's hold in force now, by stage."""
    rows = conn.execute(text(_IN_FORCE + " ORDER BY stage"))
    return [_in_force(row) for row in rows]


def end(conn: Connection, stage: str) -> HoldInForce | None:
    """End the stage's hold in force now, for every instance (an operator's decision); the hold it
    ended, None if none held. The refusals in a row are kept: a try refused again holds twice as
    long, and a batch admitted ends the series, as after a hold that ran out. A batch created
    before the release counts as one in flight at a refusal: created while the queue was known full,
    its refusal would have brought the hold back at once, longer (it was a refusal "since")."""
    row = conn.execute(text(_IN_FORCE + " AND stage = :stage FOR UPDATE"), {"stage": stage}).one_or_none()
    if row is None:
        return None
    conn.execute(text("""
        UPDATE stage_queue_holds SET held_until = now(), refused_at = now(), updated_at = now()
         WHERE stage = :stage"""),
        {"stage": stage})
    return _in_force(row)


def _in_force(row: Row[Any]) -> HoldInForce:
    return HoldInForce(str(row.stage), row.held_until, int(row.refusals), float(row.left_s))


def _hold(row: Row[Any]) -> QueueHold:
    return QueueHold(int(row.refusals), float(row.refused_at), float(row.until))
