"""The set-based statements of the projections.

Each takes its rows as one JSON document (`json_rows`, read by `jsonb_to_recordset`), so one
statement applies a whole consumer batch and its text never depends on the batch size. Terminal
guards live here, in the `WHERE` of each `ON CONFLICT DO UPDATE`: a row that did not change is not
returned, and only returned rows count towards the job's counters.
"""

from __future__ import annotations

from sqlalchemy import text

from lotlens_common.events import TERMINAL_JOB_STATUSES
from lotlens_common.tables import LAST_SEQ
from lotlens_result_store.status import (
    CANCELLED,
    PROCESSING,
    TERMINAL_LOT_STATUSES,
    TRANSLATING,
    rank_sql,
)


def _sql_list(values: frozenset[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in sorted(values)) + ")"


_LOT_SETTLED = _sql_list(TERMINAL_LOT_STATUSES)
# A cancelled job's unfinished lots read `cancelled`; a result OpenAI still returns for one (its
# batch was already running) completes or fails it, so paid work is shown, but nothing else moves it.
_LOT_STOPPED = _sql_list(TERMINAL_LOT_STATUSES | {CANCELLED})
_JOB_SETTLED = _sql_list(TERMINAL_JOB_STATUSES)
# A lot whose VisionCompleted or LotFailed is projected (or whose translation came first).
_PAST_VISION = _sql_list(TERMINAL_LOT_STATUSES | {TRANSLATING})

# `jobs.images_processed` is the sum of `processed_images` over the job's stopped lots (completed,
# failed or cancelled): a finished job's total is the sum its results show for its lots. Each
# statement below returns what it adds: a lot's images when it stops, a change to them after.
# What a lot stopping now adds (`l`, its row as written): its images, less those counted when it
# was cancelled. The subquery reads the row as it was before the statement, which no other
# transaction changes meanwhile (`completion.lock_jobs`).
_NEWLY_STOPPED_IMAGES = ("l.processed_images - coalesce((SELECT o.processed_images FROM lots AS o WHERE "
                         f"o.job_id = l.job_id AND o.lot_id = l.lot_id AND o.status = '{CANCELLED}'), 0)")

UPSERT_SUBMITTED_JOBS = text("""
INSERT INTO jobs AS j (job_id, client_id, status, api_version, languages, total_lots,
                       webhook_configured, created_at, estimated_completion, retry_of)
SELECT v.job_id, v.client_id, 'pending', v.api_version, v.languages, v.total_lots,
       v.webhook_configured, v.created_at, v.estimated_completion, v.retry_of
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(job_id text, client_id text, api_version text, languages jsonb, total_lots int,
          webhook_configured boolean, created_at timestamptz, estimated_completion timestamptz,
          retry_of text)
ON CONFLICT (job_id) DO UPDATE SET
    client_id = excluded.client_id, api_version = excluded.api_version,
    languages = excluded.languages, total_lots = excluded.total_lots,
    webhook_configured = excluded.webhook_configured, created_at = excluded.created_at,
    estimated_completion = excluded.estimated_completion, retry_of = excluded.retry_of,
    updated_at = now()
""")

# Each projection that has one tries its COPY first (`metrics.append`): it writes rows seen for
# the first time, as nearly all are, for 40-60% of the database's CPU; a batch with a row already
# there (a later-stage event projected first, a re-delivery, a replay) runs the statement below.
COPY_SUBMITTED_LOTS = "COPY lots (job_id, lot_id, seq, additional_info, image_urls, webhook) FROM STDIN"

# Descriptive columns only: status and image counts may already come from a later stage.
UPSERT_SUBMITTED_LOTS = text("""
INSERT INTO lots AS l (job_id, lot_id, seq, additional_info, image_urls, webhook, status)
SELECT v.job_id, v.lot_id, v.seq, v.additional_info, v.image_urls, v.webhook, 'pending'
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(job_id text, lot_id text, seq int, additional_info text, image_urls jsonb, webhook text)
ON CONFLICT (job_id, lot_id) DO UPDATE SET
    seq = excluded.seq, additional_info = excluded.additional_info,
    image_urls = excluded.image_urls, webhook = excluded.webhook, updated_at = now()
WHERE l.seq IS NULL
""")

# Returns, per job, the images to add for lots that had already stopped when their vision result
# arrived (TranslationCompleted projected first counted them with 0 images, a LotFailed with what
# it carried, a cancel with none). `completed` locks the lots it reads: a lot another replica is
# completing right now is read once that commits (READ COMMITTED re-reads a locked row's latest
# version), where the statement's snapshot said "not completed yet" and its images were never
# counted. Only VisionCompleted changes `processed_images` of a lot that is not failed, one lot's
# VisionCompleted events are consumed by one consumer in order, and the upsert leaves a completed
# lot completed. The lots are locked in key order, as the upsert would take them. No join of the
# two CTEs: the planner, which cannot count a JSON document's rows, made it a nested loop (94 ms
# for 1,000 lots, all completed, in a replay).
# A lot's usage per stage: `{"vision": {...}, "translation": {...}}`, merged into what is there.
# Written in the same statement as the lot's result (the row is written once, not twice).
_STAGE_USAGE = "CASE WHEN v.usage IS NULL THEN NULL ELSE jsonb_build_object({stage}, v.usage) END"
_MERGED_USAGE = ("CASE WHEN excluded.usage IS NULL THEN l.usage "
                 "ELSE coalesce(l.usage, CAST('{}' AS jsonb)) || excluded.usage END")
# The same merge where the row is updated from `v` itself (no `excluded` row).
_UPDATED_USAGE = ("CASE WHEN v.usage IS NULL THEN l.usage "
                  "ELSE coalesce(l.usage, CAST('{{}}' AS jsonb)) || jsonb_build_object({stage}, v.usage) END")

UPSERT_DESCRIBED_LOTS = text(f"""
WITH v AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                  AS v(job_id text, lot_id text, processed_images int, missing_images jsonb, usage jsonb)
), completed AS MATERIALIZED (
    SELECT l.job_id, CASE WHEN l.status IN {_LOT_STOPPED} THEN v.processed_images - l.processed_images
                          ELSE 0 END AS added
    FROM lots l JOIN v ON l.job_id = v.job_id AND l.lot_id = v.lot_id
    ORDER BY l.job_id, l.lot_id
    FOR UPDATE OF l
), written AS (
    INSERT INTO lots AS l (job_id, lot_id, processed_images, missing_images, status, usage)
    SELECT v.job_id, v.lot_id, v.processed_images, v.missing_images, '{TRANSLATING}',
           {_STAGE_USAGE.format(stage="'vision'")} FROM v
    ON CONFLICT (job_id, lot_id) DO UPDATE SET
        processed_images = excluded.processed_images, missing_images = excluded.missing_images,
        status = CASE WHEN l.status IN {_LOT_STOPPED} THEN l.status ELSE '{TRANSLATING}' END,
        usage = {_MERGED_USAGE}, awaiting_vision = false, updated_at = now()
)
SELECT job_id, CAST(sum(added) AS int) FROM completed WHERE added <> 0 GROUP BY job_id
""")

# The usual vision result: its lot's row is there (COPYed with its submission) and still running. A
# plain UPDATE reads and writes each row once, where the upsert above reads it twice (its join,
# then the insert's conflict check) and locks it twice before writing it: 12.8-13.0 -> 9.4-10.3 us
# of the database's CPU a lot (20,000 bench lots through the handler in batches of 1,000, the two
# side by side). A running lot adds no images, and has no `awaiting_vision` (only a failed lot
# has), cleared as the upsert clears it. Returns, per job, the lots it wrote, their images and
# ids (`running.update_running_lots`); the upsert above writes the others: no row yet, or the lot
# stopped, also one another replica stopped meanwhile (an UPDATE re-reads a row it waited for).
# It takes its rows in the plan's order, not always key order: one transaction at a time writes a
# job's rows (`completion.lock_jobs`), so no two wait for each other's lots.
DESCRIBE_RUNNING_LOTS = text(f"""
WITH written AS (
    UPDATE lots AS l SET
        processed_images = v.processed_images, missing_images = v.missing_images, status = '{TRANSLATING}',
        usage = {_UPDATED_USAGE.format(stage="'vision'")}, awaiting_vision = false, updated_at = now()
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(job_id text, lot_id text, processed_images int, missing_images jsonb, usage jsonb)
    WHERE l.job_id = v.job_id AND l.lot_id = v.lot_id AND l.status NOT IN {_LOT_STOPPED}
    RETURNING l.job_id, l.lot_id
)
SELECT job_id, CAST(count(*) AS int), 0, array_agg(lot_id) FROM written GROUP BY job_id
""")

COPY_DESCRIPTIONS = "COPY descriptions (job_id, lot_id, language, damages) FROM STDIN"

INSERT_DESCRIPTIONS = text("""
INSERT INTO descriptions (job_id, lot_id, language, damages)
SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
              AS v(job_id text, lot_id text, language text, damages text)
ON CONFLICT DO NOTHING
""")

# Returns the lots completed now and the images each adds (see `_NEWLY_STOPPED_IMAGES`). Their
# usage is stored with them; a lot already settled is left alone here (see SETTLED_LOT_USAGE).
COMPLETE_LOTS = text(f"""
INSERT INTO lots AS l (job_id, lot_id, status, processed_at, usage)
SELECT v.job_id, v.lot_id, 'completed', v.processed_at, {_STAGE_USAGE.format(stage="'translation'")}
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(job_id text, lot_id text, processed_at timestamptz, usage jsonb)
ON CONFLICT (job_id, lot_id) DO UPDATE SET
    status = 'completed', processed_at = excluded.processed_at, usage = {_MERGED_USAGE},
    updated_at = now()
WHERE l.status NOT IN {_LOT_SETTLED}
RETURNING l.job_id, l.lot_id, {_NEWLY_STOPPED_IMAGES}
""")

# The usual translation: its lot's row is there and running (not cancelled: see
# `_NEWLY_STOPPED_IMAGES`), so it adds the images it has. A plain UPDATE, as DESCRIBE_RUNNING_LOTS
# is, without the subquery each returned lot ran for its images (12.7-13.4 -> 10.4-10.9 us of the
# database's CPU a lot, measured as that one), returning its lots per job as that one does;
# COMPLETE_LOTS completes the others.
COMPLETE_RUNNING_LOTS = text(f"""
WITH written AS (
    UPDATE lots AS l SET
        status = 'completed', processed_at = v.processed_at,
        usage = {_UPDATED_USAGE.format(stage="'translation'")}, updated_at = now()
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(job_id text, lot_id text, processed_at timestamptz, usage jsonb)
    WHERE l.job_id = v.job_id AND l.lot_id = v.lot_id AND l.status NOT IN {_LOT_STOPPED}
    RETURNING l.job_id, l.lot_id, l.processed_images
)
SELECT job_id, CAST(count(*) AS int), CAST(sum(processed_images) AS int), array_agg(lot_id)
FROM written GROUP BY job_id
""")

# A lot settled before its translation came back (cancelled, failed, or a replay) keeps what the
# answer used: it was paid for. Run for those lots only, which are few or none.
SETTLED_LOT_USAGE = text("""
UPDATE lots AS l
SET usage = coalesce(l.usage, CAST('{}' AS jsonb))
            || jsonb_build_object('translation', v.usage)
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(job_id text, lot_id text, usage jsonb)
WHERE l.job_id = v.job_id AND l.lot_id = v.lot_id
""")


# Returns, per job, the lots that became failed now and the images they add. A translation-stage
# failure keeps the image counts the vision result already recorded when the event carries none.
# One projected before its lot's vision result (the row has no processed image yet: a described
# lot has one) is `awaiting_vision`: its job waits for that result's usage before it settles. The
# failed stage's usage (answers billed though the lot failed) is merged in under the stage's name.
FAIL_LOTS = text(f"""
WITH done AS (
    INSERT INTO lots AS l (job_id, lot_id, status, error_message, processed_images, missing_images,
                           processed_at, awaiting_vision, usage)
    SELECT v.job_id, v.lot_id, 'failed', v.reason, v.processed_images, v.missing_images, v.processed_at,
           v.stage = 'translation', {_STAGE_USAGE.format(stage="v.stage")}
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(job_id text, lot_id text, reason text, processed_images int, missing_images jsonb,
              processed_at timestamptz, stage text, usage jsonb)
    ON CONFLICT (job_id, lot_id) DO UPDATE SET
        status = 'failed', error_message = excluded.error_message, usage = {_MERGED_USAGE},
        awaiting_vision = excluded.awaiting_vision AND l.processed_images = 0,
        processed_images = greatest(l.processed_images, excluded.processed_images),
        missing_images = CASE WHEN excluded.missing_images = '[]'::jsonb THEN l.missing_images
                              ELSE excluded.missing_images END,
        processed_at = excluded.processed_at, updated_at = now()
    WHERE l.status NOT IN {_LOT_SETTLED}
    RETURNING l.job_id, {_NEWLY_STOPPED_IMAGES} AS added
)
SELECT job_id, CAST(count(*) AS int), CAST(sum(added) AS int) FROM done GROUP BY job_id
""")

# The usual failure: its lot's row is there and running (not cancelled: see `_NEWLY_STOPPED_IMAGES`),
# so it adds the images it has once failed. A plain UPDATE setting what FAIL_LOTS' conflict branch
# sets, as COMPLETE_RUNNING_LOTS is for a translation (the upsert read each row twice, locked it
# twice and ran the subquery for a cancel's images per lot: 15.9-16.0 -> 13.7-13.9 us of the
# database's CPU a lot, 20,000 lots failed at translation in batches of 1,000 through the handler),
# returning its lots per job as that one does; FAIL_LOTS fails the others (no row yet, cancelled,
# or stopped meanwhile by another replica).
FAIL_RUNNING_LOTS = text(f"""
WITH written AS (
    UPDATE lots AS l SET
        status = 'failed', error_message = v.reason, usage = {_UPDATED_USAGE.format(stage="v.stage")},
        awaiting_vision = v.stage = 'translation' AND l.processed_images = 0,
        processed_images = greatest(l.processed_images, v.processed_images),
        missing_images = CASE WHEN v.missing_images = '[]'::jsonb THEN l.missing_images
                              ELSE v.missing_images END,
        processed_at = v.processed_at, updated_at = now()
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(job_id text, lot_id text, reason text, processed_images int, missing_images jsonb,
              processed_at timestamptz, stage text, usage jsonb)
    WHERE l.job_id = v.job_id AND l.lot_id = v.lot_id AND l.status NOT IN {_LOT_STOPPED}
    RETURNING l.job_id, l.lot_id, l.processed_images
)
SELECT job_id, CAST(count(*) AS int), CAST(sum(processed_images) AS int), array_agg(lot_id)
FROM written GROUP BY job_id
""")

# A cancelled job's unfinished lots (see `_LOT_STOPPED`); returns, per job, the images they add.
CANCEL_LOTS = text(f"""
WITH done AS (
    UPDATE lots SET status = '{CANCELLED}', updated_at = now()
    WHERE job_id = ANY(CAST(:job_ids AS text[])) AND status NOT IN {_LOT_STOPPED}
    RETURNING job_id, processed_images
)
SELECT job_id, CAST(sum(processed_images) AS int) FROM done GROUP BY job_id
""")

# Of these jobs, the cancelled ones: their lots whose submission came after the cancel (dead-lettered,
# then replayed) found no row of theirs to cancel (`CANCEL_LOTS` then does). Asked first, alone: as
# one join with the lots, planned from the statistics of a finished job (its lots all settled), it
# read every unsettled lot with a scan of `jobs` each, at every batch of submissions (210,000 scans
# for a 50,000-lot job). In job order, as `CANCEL_LOTS` then takes them (not the heap's order).
CANCELLED_JOBS = text(f"""
SELECT job_id FROM jobs WHERE job_id = ANY(CAST(:job_ids AS text[])) AND status = '{CANCELLED}'
ORDER BY job_id
""")

INSERT_OPENAI_BATCHES = text("""
INSERT INTO openai_batches (batch_id, job_id, stage, shard_id, attempt, lot_count, created_at)
SELECT v.batch_id, v.job_id, :stage, v.shard_id, v.attempt, v.lot_count, v.created_at
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(batch_id text, job_id text, shard_id text, attempt int, lot_count int, created_at timestamptz)
ON CONFLICT (batch_id) DO NOTHING
""")

# One row per touched job: counters are added, the status only moves up the rank, a job row
# created here (its JobSubmitted not yet projected) gets the client and size from lot events.
APPLY_JOB_CHANGES = text(f"""
INSERT INTO jobs AS j (job_id, client_id, total_lots, status, cancelled_at, processed_lots,
                       failed_lots, images_processed)
SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
              AS v(job_id text, client_id text, total_lots int, status text, cancelled_at timestamptz,
                   processed_lots int, failed_lots int, images_processed int)
ON CONFLICT (job_id) DO UPDATE SET
    client_id = coalesce(j.client_id, excluded.client_id),
    total_lots = coalesce(j.total_lots, excluded.total_lots),
    status = CASE WHEN {rank_sql("excluded.status")} > {rank_sql("j.status")}
                  THEN excluded.status ELSE j.status END,
    cancelled_at = CASE WHEN excluded.status = '{CANCELLED}' AND j.status NOT IN {_JOB_SETTLED}
                        THEN excluded.cancelled_at ELSE j.cancelled_at END,
    processed_lots = j.processed_lots + excluded.processed_lots,
    failed_lots = j.failed_lots + excluded.failed_lots,
    images_processed = j.images_processed + excluded.images_processed,
    updated_at = now()
""")

# A lot's usage for one stage; a replayed event writes the same value again (idempotent).
# Per job and model: the tokens of every lot's answers, and their cost (NULL in a sum counts as
# unknown: `unpriced` says whether any answer had no price).
JOB_USAGE = text("""
SELECT l.job_id, s.value->>'model' AS model,
       sum(CAST(s.value->>'input_tokens' AS bigint)), sum(CAST(s.value->>'cached_input_tokens' AS bigint)),
       sum(CAST(s.value->>'output_tokens' AS bigint)), sum(CAST(s.value->>'reasoning_tokens' AS bigint)),
       sum(CAST(s.value->>'estimated_cost_usd' AS float8)),
       bool_or(s.value->>'estimated_cost_usd' IS NULL) AS unpriced
FROM lots l CROSS JOIN LATERAL jsonb_each(l.usage) AS s
WHERE l.job_id = ANY(CAST(:job_ids AS text[])) AND l.usage IS NOT NULL
GROUP BY l.job_id, s.value->>'model'
ORDER BY l.job_id, model
""")

# The outcome the result-store announced is final: on a replay, where a cancel and the last lot
# may be projected in another order than they were live, it overrides what the replay decided.
# Terminal times follow `completion._finished_at`: a cancelled job's time is its cancel time.
APPLY_ANNOUNCED_JOBS = text(f"""
INSERT INTO jobs AS j (job_id, client_id, status, total_lots, error_message, completed_at, cancelled_at,
                       completion_published, usage)
SELECT v.job_id, v.client_id, v.status, v.total_lots, v.error_message,
       CASE WHEN v.status = '{CANCELLED}' THEN NULL ELSE v.finished_at END,
       CASE WHEN v.status = '{CANCELLED}' THEN v.finished_at END, true, v.usage
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(job_id text, client_id text, status text, total_lots int, error_message text,
          finished_at timestamptz, usage jsonb)
ON CONFLICT (job_id) DO UPDATE SET
    client_id = coalesce(j.client_id, excluded.client_id),
    total_lots = coalesce(j.total_lots, excluded.total_lots),
    status = excluded.status, error_message = excluded.error_message,
    completed_at = excluded.completed_at, cancelled_at = excluded.cancelled_at,
    completion_published = true, usage = coalesce(excluded.usage, j.usage), updated_at = now()
""")

# A running job none of whose lots waits for vision any more: every lot has its row and is past
# the vision stage. Run for the jobs a batch's vision results touched while they are `processing`
# (a job moves once). Vision takes a job's lots in request order, so its lots still waiting are
# found first walking that order backwards (the request-order index, about 0.1 ms); the count,
# about 11 ms for 50,000 lots, runs once no lot is waiting (whether every row is there). The walk's
# status test is on `l.status || ''`, which has no statistics: on the column's, taken while the
# table held finished jobs only (every lot completed: the bench's VACUUM ANALYZE before each job,
# or a deployment between large jobs), a waiting lot looked rare, and the planner read and sorted
# all of the job's lots instead, at every batch: a 50,000-lot job after two analyzed ones spent
# about 28 us of PostgreSQL's CPU a lot in this statement, 1.4 CPU-s; now 1.4 us a lot, most of it
# the one walk and count at its last batch (tests/integration/result_store/test_job_stage_plan.py).
ADVANCE_DESCRIBED_JOBS = text(f"""
UPDATE jobs AS j SET status = '{TRANSLATING}', updated_at = now()
WHERE j.job_id = ANY(CAST(:job_ids AS text[])) AND j.status = '{PROCESSING}'
  AND j.total_lots IS NOT NULL AND j.processed_lots + j.failed_lots < j.total_lots
  AND CASE WHEN (SELECT true FROM lots AS l
                 WHERE l.job_id = j.job_id AND l.status || '' NOT IN {_PAST_VISION}
                 ORDER BY coalesce(l.seq, {LAST_SEQ}) DESC, l.lot_id DESC LIMIT 1) THEN false
           ELSE (SELECT count(*) FROM lots AS l
                 WHERE l.job_id = j.job_id AND l.status IN {_PAST_VISION}) = j.total_lots END
""")
