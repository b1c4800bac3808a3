"""Lots arriving at a stage: each joins the end of its job's queue and is counted on its job, once.

A lot arrives once, except when its consumer batch is delivered again after a crash or a
rebalance. So the rows are COPYed (`append_rows`: 1.1 instead of 1.8 CPU-s of PostgreSQL for a
50,000-lot job's arrivals, measured in isolation); only a batch holding a lot already known is
inserted with the statement that skips known lots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import orjson
from sqlalchemy import Connection, text

from lotlens_common.row_sets import append_rows, copy_row, json_rows
from lotlens_common.stage.adapters.postgres import CANCELLED, WAITING, take_places

_COPY = "COPY stage_lots (stage, job_id, lot_id, client_id, total_lots, work, status, place) FROM STDIN"

_COUNT_ARRIVED = text("""
    UPDATE stage_jobs AS j SET arrived = j.arrived + v.n, updated_at = now()
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(job_id text, n int)
     WHERE j.stage = :stage AND j.job_id = v.job_id""")

# Known lots are left as they are and not counted again; a re-delivered lot leaves its place
# unused (places need not be consecutive). The new ones are returned.
_INSERT_NEW = text("""
    WITH arrived AS (
        INSERT INTO stage_lots (stage, job_id, lot_id, client_id, total_lots, work, status, place)
        SELECT :stage, v.job_id, v.lot_id, v.client_id, v.total_lots, v.work, v.status, v.place
          FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS v(job_id text, lot_id text, client_id text, total_lots int, work jsonb, place bigint,
                    status text)
        ON CONFLICT (stage, job_id, lot_id) DO NOTHING
        RETURNING job_id, lot_id),
    counted AS (
        UPDATE stage_jobs AS j SET arrived = j.arrived + a.n, updated_at = now()
          FROM (SELECT job_id, count(*) AS n FROM arrived GROUP BY job_id) AS a
         WHERE j.stage = :stage AND j.job_id = a.job_id)
    SELECT job_id, lot_id FROM arrived""")


class Arrival(NamedTuple):
    """A lot arriving at a stage, its work already as the JSON `stage_lots.work` holds.

    A named tuple, not a frozen dataclass: one is made for each lot of a consumer batch, and the
    dataclass set its five fields through `object.__setattr__` (0.70 us a lot; 0.25 as a tuple)."""

    job_id: str
    lot_id: str
    client_id: str
    total_lots: int
    work: bytes


def enqueue_arrivals(conn: Connection, stage: str, lots: Sequence[Arrival],
                     status: str = WAITING) -> set[tuple[str, str]]:
    """Add arriving lots, their work already written as JSON, at the end of their job's queue and
    count them on their job; a lot already known (re-delivered event) is left as it is and not
    counted again. The (job id, lot id) of those new here."""
    if not lots:
        return set()
    counts: dict[str, int] = {}
    for lot in lots:
        counts[lot.job_id] = counts.get(lot.job_id, 0) + 1
    taken = take_places(conn, stage, counts)
    last = {job_id: job.before for job_id, job in taken.items()}
    # A cancelled job's lots arrive cancelled: counted, never sent.
    statuses = {job_id: CANCELLED if status == WAITING and job.cancelled else status
                for job_id, job in taken.items()}
    places, rows = [], []
    for lot in lots:
        place = last[lot.job_id] = last[lot.job_id] + 1
        places.append(place)
        # The work as text: a row of text only is joined and checked whole (`copy_row`), 0.9 us a
        # row where one holding bytes was escaped field by field, 2.6 us.
        rows.append(copy_row((stage, lot.job_id, lot.lot_id, lot.client_id, str(lot.total_lots),
                              lot.work.decode(), statuses[lot.job_id], str(place))))
    if not append_rows(conn, _COPY, b"".join(rows)):
        inserted = conn.execute(_INSERT_NEW, {"stage": stage, "rows": json_rows(
            {"job_id": lot.job_id, "lot_id": lot.lot_id, "client_id": lot.client_id,
             "total_lots": lot.total_lots, "work": orjson.Fragment(lot.work), "place": place,
             "status": statuses[lot.job_id]}
            for lot, place in zip(lots, places, strict=True))})
        return {(str(job_id), str(lot_id)) for job_id, lot_id in inserted}
    conn.execute(_COUNT_ARRIVED, {"stage": stage, "rows": json_rows(
        {"job_id": job_id, "n": n} for job_id, n in counts.items())})
    return {(lot.job_id, lot.lot_id) for lot in lots}
