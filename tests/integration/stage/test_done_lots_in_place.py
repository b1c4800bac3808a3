"""A lot marked done is rewritten on its own page, so PostgreSQL updates it without touching the
table's indexes (a HOT update): each row of a 50,000-lot shard settled done was a new row version
on another page and an entry in both indexes, most of what the stage asked of the database."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.work import LotWork, VisionWork
from tests.conftest import new_id
from tests.integration.stage.helpers import enqueue

LOTS = 300


def _lots(job_id: str) -> list[LotWork[VisionWork]]:
    """Lots the size of the bench's: five image URLs, notes, three languages."""
    urls = tuple(f"https://images.example.com/lots/{job_id}/{n}.jpg" for n in range(5))
    return [LotWork(job_id, f"lot-{i:06d}", "c1", LOTS, 0, VisionWork(
        additional_info="2019 Toyota Camry, front collision", image_urls=urls, languages=("en", "de", "ru"),
        trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})) for i in range(LOTS)]


def _pages(conn: Connection, job_id: str) -> dict[str, str]:
    """Each lot's heap page (the block of its row version's ctid)."""
    rows = conn.execute(text("SELECT lot_id, split_part(trim(ctid::text, '()'), ',', 1) AS page"
                             " FROM stage_lots WHERE stage = 'vision' AND job_id = :job_id"),
                        {"job_id": job_id})
    return {row.lot_id: row.page for row in rows}


def test_lots_settled_done_stay_on_their_page(engine: Engine) -> None:
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, "vision", _lots(job_id))
        queued = store.next_in_queue(conn, "vision", job_id, LOTS, VisionWork)
        store.create_shard(conn, "vision", "shard-" + job_id, [lot for _, lot in queued], 0,
                           (queued[0][0], queued[-1][0]))
        before = _pages(conn, job_id)
    with engine.begin() as conn:  # a chunk settled done, as `PostgresWorkStore.settle` writes it
        store.set_status(conn, "vision", job_id, sorted(before), store.DONE)
    with engine.begin() as conn:
        after = _pages(conn, job_id)
        assert store.lot_statuses(conn, "vision", job_id) == dict.fromkeys(before, store.DONE)
    moved = [lot_id for lot_id, page in after.items() if page != before[lot_id]]
    assert moved == [], f"{len(moved)} of {LOTS} lots settled done moved to another page"
