"""The stage's figures for /metrics (`stage/figures.py`) in two statements, each cut short on its
own: the shards' and the queue hold's rows (one snapshot, milliseconds), and the lots waiting (a
count of queues that may hold millions). One timing out leaves the other's figures standing."""

from __future__ import annotations

from sqlalchemy import Connection, text

from lotlens_common.stage.adapters import postgres as sql
from lotlens_common.stage.adapters.postgres_queue_hold import READ, held_now
from lotlens_common.stage.adapters.postgres_release import PAUSING
from lotlens_common.stage.figures import StageFigures

# The oldest batch's age: its creation at OpenAI (`postgres.BATCH_MADE`; a shard recorded without
# it, since its lots were claimed), by the database's clock.
# The batches: submitted shards by the status their batch was last read in (`note_batch_status`),
# but for those whose batch cannot be read (401/403/404: OpenAI may have lost it), in none.
# Paused: a row holds the stage paused (`PAUSING`); the hold: `postgres_queue_hold`'s row, if any.
_FIGURES = f"""
    SELECT {sql.TOKENS_ENQUEUED} AS tokens_enqueued,
           (SELECT coalesce(extract(epoch FROM now() - min(coalesce(batch_created_at, created_at))), 0)
              FROM stage_shards WHERE stage = :stage AND status = 'submitted') AS oldest_batch_age_s,
           (SELECT coalesce(json_object_agg(batch_status, shards), '{{}}') FROM (
               SELECT batch_status, count(*) AS shards FROM stage_shards
                WHERE stage = :stage AND status = 'submitted' AND batch_status IS NOT NULL
                  AND unreadable_since IS NULL
                GROUP BY batch_status) AS b) AS batches,
           EXISTS (SELECT FROM stage_shards WHERE stage = :stage AND ({PAUSING})) AS paused,
           hold.*
      FROM (SELECT) AS one LEFT JOIN ({READ}) AS hold ON true"""

# The lots each `building` shard still holds (claimed, no batch yet), as `shard_lots` reads them:
# a subquery a shard, through the place index, so an idle stage (none building) reads no lot.
_IN_BUILDING = """(
    SELECT coalesce(sum(CASE WHEN s.first_place IS NULL
        THEN (SELECT count(*) FROM stage_lots l WHERE l.stage = s.stage AND l.job_id = s.job_id
                 AND l.shard_id = s.shard_id AND l.status = 'submitted')
        ELSE (SELECT count(*) FROM stage_lots l WHERE l.stage = s.stage AND l.job_id = s.job_id
                 AND l.place BETWEEN s.first_place AND s.last_place AND l.status = 'waiting') END), 0)
      FROM stage_shards s WHERE s.stage = :stage AND s.status = 'building')"""

# Lots waiting: for a shard, or held by a `building` one. Those it claimed wait as much (an
# upload failing, OpenAI unreachable, the quota refused keep them there); left out, a stage whose
# uploads failed showed none waiting while all its lots did.
_LOTS_WAITING = f"SELECT (SELECT coalesce(sum(w.waiting), 0) {sql.QUEUES}) + {_IN_BUILDING}"


def figures(conn: Connection, stage: str) -> StageFigures:
    """The stage's shards' and queue hold's figures, as the tables hold them now."""
    row = conn.execute(text(_FIGURES), {"stage": stage}).one()
    batches = {status: int(shards) for status, shards in row.batches.items()}
    return StageFigures(int(row.tokens_enqueued), float(row.oldest_batch_age_s), held_now(row), batches,
                        bool(row.paused))


def lots_waiting(conn: Connection, stage: str) -> int:
    """The stage's lots not in an OpenAI batch yet, as the tables hold them now."""
    return int(conn.execute(text(_LOTS_WAITING), {"stage": stage}).scalar_one())
