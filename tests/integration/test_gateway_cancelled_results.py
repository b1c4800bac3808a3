"""The results of a job cancelled before the result-store projected it, read while the pipeline
catches up: the result-store projects the job's lots and the relay prunes the outbox rows they
came from, between the gateway's reads of one download. Every lot is listed once all the same.

The catching-up is done from a hook on the gateway's own statements (SQLAlchemy's
`after_cursor_execute`), right after its first read of the job's outbox lot ids: where a download
of 1,010 lots read them a chunk (`STREAM_CHUNK`, 1,000) at a time, each on a connection of its own,
that is between two chunks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text, update

from lotlens_common.tables import jobs, lots
from tests.integration.gateway_support import Gateway, make_lots, wait_published

pytestmark = pytest.mark.integration
# More than one chunk of outbox ids (`STREAM_CHUNK`): the download is streamed, not built whole.
LOTS = 1_010
RESULTS = "/api/v1/batch-results/{job_id}"


@contextmanager
def pipeline_catching_up(gateway: Gateway, engine: Engine, job_id: str, projected: list[dict[str, Any]],
                         prune: bool) -> Iterator[list[int]]:
    """Once the gateway has read the job's outbox lot ids the first time: the result-store
    projects the job and `projected` (a result-store an hour behind, catching up), and, with
    `prune`, the relay's prune deletes the job's outbox rows (published over its retention ago).
    Yields the rows each prune deleted."""
    pruned: list[int] = []
    fired = [False]

    def catch_up() -> None:
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(insert(jobs).values(
                job_id=job_id, client_id=gateway.client_id, status="cancelled", api_version="1.0.0",
                languages=["en"], total_lots=LOTS, created_at=now, updated_at=now, cancelled_at=now))
            conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot["lot_id"], "seq": seq,
                                         "status": "cancelled", "missing_images": []}
                                        for seq, lot in enumerate(projected)])
            conn.execute(text("UPDATE outbox SET published_at = published_at - interval '2 hours' "
                              "WHERE job_id = :job"), {"job": job_id})
        if prune:
            pruned.append(gateway.deps.relay.prune())

    def after(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        # The gateway's read of the job's outbox `LotSubmitted` lot ids (its JSON path is a parameter).
        said = str(parameters)
        if not fired[0] and "FROM outbox" in statement and job_id in said and "'lot_id'" in said:
            fired[0] = True
            catch_up()

    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield pruned
    finally:
        event.remove(Engine, "after_cursor_execute", after)
    assert fired[0], "the gateway never read the job's outbox lot ids"


@pytest.mark.parametrize("prune", [True, False], ids=["pruned", "projected only"])
@pytest.mark.parametrize("path", [RESULTS, f"{RESULTS}/download"])
def test_a_cancelled_jobs_results_list_every_lot_once_while_the_pipeline_catches_up_mid_download(
        gateway: Gateway, engine: Engine, path: str, prune: bool) -> None:
    lot_list = make_lots(LOTS, images=1)
    submitted = gateway.submit(lot_list)
    assert submitted.status_code == 201, submitted.text[:300]
    job_id = submitted.json()["job_id"]
    cancel = gateway.cancel(job_id)
    assert cancel.status_code == 200, cancel.text[:300]
    wait_published(gateway, engine, job_id)

    # Every other lot projected (so lots both projected and read from the outbox must be listed once).
    with pipeline_catching_up(gateway, engine, job_id, lot_list[::2], prune) as pruned:
        results = gateway.get_job(path, job_id)

    assert results.status_code == 200, results.text[:300]
    # JobSubmitted, JobCancelled and the projected lots' rows: the others wait for their projection.
    assert pruned == ([len(lot_list[::2]) + 2] if prune else []), pruned
    listed = results.json()["results"]["lots"]
    counts = Counter(lot["lot_id"] for lot in listed)
    missing = [lot["lot_id"] for lot in lot_list if lot["lot_id"] not in counts]
    twice = sorted(lot_id for lot_id, count in counts.items() if count > 1)
    assert (len(listed), missing[:5], len(missing), twice[:5]) == (LOTS, [], 0, []), \
        f"{len(listed)} lots listed of {LOTS}"
    assert {lot["status"] for lot in listed} == {"cancelled"}


@pytest.mark.parametrize("placed", [False, True], ids=["still unplaced", "placed behind the download"])
def test_a_cancelled_jobs_results_list_a_lot_failed_before_its_submission_was_recorded(
        gateway: Gateway, engine: Engine, placed: bool) -> None:
    # A lot row written before its LotSubmitted (a LotFailed, another topic) has no position and
    # sorts last, and is no outbox-only lot either. The download read as many lots as its first
    # window of sizes counted: lots projected ahead of that row meanwhile pushed it out of the
    # count, and a position given it behind the lots already read put it past none of them.
    lot_list = make_lots(LOTS, images=1)
    submitted = gateway.submit(lot_list)
    assert submitted.status_code == 201, submitted.text[:300]
    job_id = submitted.json()["job_id"]
    assert gateway.cancel(job_id).status_code == 200
    wait_published(gateway, engine, job_id)
    now = datetime.now(UTC)
    unplaced = 100  # of the first 300 lots, the others projected
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=gateway.client_id, status="cancelled", api_version="1.0.0",
            languages=["en"], total_lots=LOTS, created_at=now, updated_at=now, cancelled_at=now))
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot["lot_id"], "seq": seq,
                                     "status": "cancelled"} for seq, lot in enumerate(lot_list[:300])
                                    if seq != unplaced])
        conn.execute(insert(lots).values(job_id=job_id, lot_id=lot_list[unplaced]["lot_id"],
                                         status="failed", error_message="gone"))
    steps = ["sizes", "lots"] if placed else ["sizes"]

    def after(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if steps[:1] == ["sizes"] and "octet_length(lots.lot_id)" in statement:
            steps.pop(0)  # right after the download's first read of sizes: lots 300-599 projected
            with engine.begin() as conn:
                conn.execute(insert(lots), [
                    {"job_id": job_id, "lot_id": lot["lot_id"], "seq": 300 + seq, "status": "cancelled"}
                    for seq, lot in enumerate(lot_list[300:600])])
        elif steps == ["lots"] and "lots.missing_images" in statement and "LIMIT" in statement:
            steps.pop(0)  # and after its first chunk of lots, the unplaced lot's LotSubmitted
            with engine.begin() as conn:
                conn.execute(update(lots).values(seq=unplaced).where(
                    lots.c.job_id == job_id, lots.c.lot_id == lot_list[unplaced]["lot_id"]))

    event.listen(Engine, "after_cursor_execute", after)
    try:
        results = gateway.get_job(f"{RESULTS}/download", job_id)
    finally:
        event.remove(Engine, "after_cursor_execute", after)
    assert steps == [] and results.status_code == 200, results.text[:300]
    counts = Counter(lot["lot_id"] for lot in results.json()["results"]["lots"])
    missing = [lot["lot_id"] for lot in lot_list if lot["lot_id"] not in counts]
    twice = sorted(lot_id for lot_id, count in counts.items() if count > 1)
    assert (missing, twice, sum(counts.values())) == ([], [], LOTS)
