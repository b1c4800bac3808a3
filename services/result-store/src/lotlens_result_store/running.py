"""Lots written in place where they are running: the usual vision result, translation and failure.

A lot's row is COPYed with its submission, then written by its vision result and by its
translation or failure. Nearly always the row is there and the lot running (not completed, failed
or cancelled) when they come, and a plain UPDATE writes it (`sql.DESCRIBE_RUNNING_LOTS`,
`sql.COMPLETE_RUNNING_LOTS`, `sql.FAIL_RUNNING_LOTS`); the general upsert takes the other lots of
the batch, which a replay, a rebuild, a cancel or a later stage projected first leave. The two ways
are held to the upsert alone by tests/integration/result_store/test_running_lots_fast_path.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause

from lotlens_common.row_sets import json_rows
from lotlens_result_store.metrics import execute

Row = dict[str, Any]


@dataclass(frozen=True)
class Written:
    """What a running-lots statement wrote, per job: its lots, the images they add, their ids."""

    per_job: list[tuple[str, int, int, list[str]]]
    # The rows of the lots it did not write, in the batch's (key) order, for the general statement.
    rest: list[Row]

    def lots(self) -> set[tuple[str, str]]:
        """The (job id, lot id) of every lot written."""
        return {(job_id, lot_id) for job_id, _, _, lot_ids in self.per_job for lot_id in lot_ids}


def update_running_lots(conn: Connection, operation: str, statement: TextClause,
                        rows: Sequence[Row]) -> Written:
    """Write the rows' lots that are running with `statement`; what it wrote and what is left.

    The statement returns one row per job, not one per lot: 1,000 result rows read into Python
    and walked cost about 0.6 us a lot of a translation batch."""
    per_job = [(str(job_id), int(count), int(images), lot_ids)
               for job_id, count, images, lot_ids in execute(conn, operation, statement,
                                                             {"rows": json_rows(rows)})]
    written = Written(per_job, [])
    if sum(count for _, count, _, _ in per_job) == len(rows):  # one row a lot (`grouping.latest_events`)
        return written
    lots = written.lots()
    return Written(per_job, [row for row in rows if (row["job_id"], row["lot_id"]) not in lots])
