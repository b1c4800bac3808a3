"""Each stage keeps its jobs' queues by place: a claim moves the job's `claimed_place` on and
records the shard's first and last place, instead of writing every lot it takes.

Downgrade: the lots a shard holds by place are written as the older release reads a shard's lots,
`submitted` with its `shard_id` and the attempt counted; nothing is lost but the places.

Revision ID: 0016_stage_places
Revises: 0014_stage_job_arrivals
"""

from __future__ import annotations

from alembic import op

revision = "0016_stage_places"
down_revision = "0014_stage_job_arrivals"


def upgrade() -> None:
    """Number the lots already waiting or sent in their queue order, and index the places.

    Lots an older release sent are `submitted` with a `shard_id`, the by-name membership the new
    code still reads; their shards have no places. While the older release's stages run on
    during the rollout, they insert lots without a place: the trigger gives each the next place of
    its job (new code always sends the place, so the trigger's condition skips its rows).
    """
    op.execute("ALTER TABLE stage_jobs ADD COLUMN IF NOT EXISTS last_place bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE stage_jobs ADD COLUMN IF NOT EXISTS claimed_place bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE stage_shards ADD COLUMN IF NOT EXISTS first_place bigint")
    op.execute("ALTER TABLE stage_shards ADD COLUMN IF NOT EXISTS last_place bigint")
    op.execute("ALTER TABLE stage_lots ADD COLUMN IF NOT EXISTS place bigint")
    op.execute("""
        UPDATE stage_lots AS l SET place = n.place
          FROM (SELECT stage, job_id, lot_id,
                       row_number() OVER (PARTITION BY stage, job_id ORDER BY enqueued_at, lot_id) AS place
                  FROM stage_lots) AS n
         WHERE l.stage = n.stage AND l.job_id = n.job_id AND l.lot_id = n.lot_id AND l.place IS NULL""")
    op.execute("""
        INSERT INTO stage_jobs AS j (stage, job_id, last_place)
        SELECT stage, job_id, max(place) FROM stage_lots GROUP BY stage, job_id
        ON CONFLICT (stage, job_id) DO UPDATE SET last_place = greatest(j.last_place, EXCLUDED.last_place)""")
    op.execute("""
        CREATE OR REPLACE FUNCTION stage_lots_next_place() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO stage_jobs AS j (stage, job_id, last_place) VALUES (NEW.stage, NEW.job_id, 1)
            ON CONFLICT (stage, job_id) DO UPDATE SET last_place = j.last_place + 1
            RETURNING last_place INTO NEW.place;
            RETURN NEW;
        END $$""")
    op.execute("DROP TRIGGER IF EXISTS stage_lots_next_place ON stage_lots")
    op.execute("""
        CREATE TRIGGER stage_lots_next_place BEFORE INSERT ON stage_lots
        FOR EACH ROW WHEN (NEW.place IS NULL) EXECUTE FUNCTION stage_lots_next_place()""")
    op.execute("ALTER TABLE stage_lots ALTER COLUMN place SET NOT NULL")
    op.execute("CREATE UNIQUE INDEX IF NOT EXISTS ix_stage_lots_place ON stage_lots (stage, job_id, place)")
    op.execute("DROP INDEX IF EXISTS ix_stage_lots_waiting")
    op.execute("DROP INDEX IF EXISTS ix_stage_lots_shard")


def downgrade() -> None:
    """Write each shard's lots by name, then drop the places, the trigger and its function, and
    build the two indexes the upgrade dropped (in the revision's transaction: the work table is
    locked for the whole revision anyway, by the writes and column drops)."""
    op.execute("""
        UPDATE stage_lots AS l SET status = 'submitted', shard_id = s.shard_id, attempts = l.attempts + 1
          FROM stage_shards AS s
         WHERE s.stage = l.stage AND s.job_id = l.job_id AND s.first_place IS NOT NULL
           AND l.place BETWEEN s.first_place AND s.last_place AND l.status = 'waiting'""")
    op.execute("DROP TRIGGER IF EXISTS stage_lots_next_place ON stage_lots")
    op.execute("DROP FUNCTION IF EXISTS stage_lots_next_place()")
    op.execute("DROP INDEX IF EXISTS ix_stage_lots_place")
    op.execute("CREATE INDEX IF NOT EXISTS ix_stage_lots_waiting ON stage_lots (stage, status, job_id)")
    op.execute("CREATE INDEX IF NOT EXISTS ix_stage_lots_shard ON stage_lots (shard_id)")
    op.execute("ALTER TABLE stage_lots DROP COLUMN IF EXISTS place")
    op.execute("ALTER TABLE stage_shards DROP COLUMN IF EXISTS first_place, DROP COLUMN IF EXISTS last_place")
    op.execute("ALTER TABLE stage_jobs DROP COLUMN IF EXISTS last_place, DROP COLUMN IF EXISTS claimed_place")
