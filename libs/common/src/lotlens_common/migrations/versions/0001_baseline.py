"""Baseline schema: the read models and the services' work tables, as the first release made them.

Frozen: the DDL is written out as `tables.py` declared it when this revision was written (commit
58292a3, unchanged until 0002), never read from today's `tables.py`. A new database then takes the
path a deployed one took, each later revision really running, and the schema test can catch a
change to `tables.py` that came without its migration.

Downgrade: below the baseline is an empty database, which no release runs on; refused while any of
the twelve tables holds a row (jobs, queued work, deliveries). To start again from nothing,
drop the database.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from lotlens_common.migrations.refusals import Refusal

revision = "0001"
down_revision = None

NAMES = ("jobs", "lots", "descriptions", "openai_batches", "webhook_deliveries", "webhook_attempts",
         "stage_lots", "stage_shards", "stage_jobs", "dispatch_queue", "rate_limit_windows",
         "idempotency_keys")
# One row each is enough to know: the count is of tables holding any.
HOLDING = " + ".join(f"(SELECT count(*) FROM (SELECT FROM {name} LIMIT 1) AS one)" for name in NAMES)
REFUSAL = Refusal(
    NAMES, f"SELECT {HOLDING}",
    "{n} of the baseline's tables hold rows, which an empty database (the base) cannot: nothing was "
    "dropped; to start again from nothing, drop the database")

TABLES = [
    """CREATE TABLE jobs (
        job_id text NOT NULL,
        client_id text,
        status text NOT NULL DEFAULT 'pending',
        api_version text,
        languages jsonb,
        total_lots integer,
        processed_lots integer NOT NULL DEFAULT 0,
        failed_lots integer NOT NULL DEFAULT 0,
        images_processed integer NOT NULL DEFAULT 0,
        webhook_configured boolean NOT NULL DEFAULT false,
        error_message text,
        created_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        estimated_completion timestamptz,
        completed_at timestamptz,
        cancelled_at timestamptz,
        completion_published boolean NOT NULL DEFAULT false,
        PRIMARY KEY (job_id))""",
    "CREATE INDEX ix_jobs_client_created ON jobs (client_id, created_at)",
    """CREATE TABLE lots (
        job_id text NOT NULL,
        lot_id text NOT NULL,
        seq integer,
        status text NOT NULL DEFAULT 'pending',
        additional_info text,
        image_urls jsonb,
        webhook text,
        processed_images integer NOT NULL DEFAULT 0,
        missing_images jsonb NOT NULL DEFAULT '[]',
        error_message text,
        processed_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_id, lot_id))""",
    """CREATE TABLE descriptions (
        job_id text NOT NULL,
        lot_id text NOT NULL,
        language text NOT NULL,
        damages text NOT NULL,
        PRIMARY KEY (job_id, lot_id, language))""",
    """CREATE TABLE openai_batches (
        batch_id text NOT NULL,
        job_id text NOT NULL,
        stage text NOT NULL,
        shard_id text NOT NULL,
        attempt integer NOT NULL,
        lot_count integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (batch_id))""",
    "CREATE INDEX ix_openai_batches_job_id ON openai_batches (job_id)",
    """CREATE TABLE webhook_deliveries (
        id text NOT NULL,
        batch_job_id text NOT NULL,
        webhook_url text NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        attempt_count integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_attempt_at timestamptz,
        delivered_at timestamptz,
        error_message text,
        last_status_code integer,
        last_latency_ms double precision,
        next_attempt_at timestamptz,
        PRIMARY KEY (id))""",
    "CREATE INDEX ix_webhook_deliveries_batch_job_id ON webhook_deliveries (batch_job_id)",
    """CREATE TABLE webhook_attempts (
        delivery_id text NOT NULL,
        attempt integer NOT NULL,
        attempted_at timestamptz NOT NULL,
        succeeded boolean NOT NULL,
        status_code integer,
        latency_ms double precision,
        error text,
        response_body text,
        PRIMARY KEY (delivery_id, attempt))""",
    """CREATE TABLE stage_lots (
        stage text NOT NULL,
        job_id text NOT NULL,
        lot_id text NOT NULL,
        client_id text NOT NULL,
        total_lots integer NOT NULL,
        work jsonb NOT NULL,
        status text NOT NULL DEFAULT 'waiting',
        shard_id text,
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        enqueued_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (stage, job_id, lot_id))""",
    "CREATE INDEX ix_stage_lots_waiting ON stage_lots (stage, status, job_id)",
    "CREATE INDEX ix_stage_lots_shard ON stage_lots (shard_id)",
    """CREATE TABLE stage_shards (
        shard_id text NOT NULL,
        stage text NOT NULL,
        job_id text NOT NULL,
        client_id text NOT NULL,
        attempt integer NOT NULL,
        status text NOT NULL DEFAULT 'building',
        batch_id text,
        batch_status text,
        lot_count integer NOT NULL,
        estimated_tokens integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (shard_id))""",
    "CREATE INDEX ix_stage_shards_status ON stage_shards (stage, status)",
    """CREATE TABLE stage_jobs (
        stage text NOT NULL,
        job_id text NOT NULL,
        cancelled boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (stage, job_id))""",
    """CREATE TABLE dispatch_queue (
        delivery_id text NOT NULL,
        job_id text NOT NULL,
        client_id text NOT NULL,
        webhook_url text NOT NULL,
        part integer NOT NULL DEFAULT 1,
        total_parts integer NOT NULL DEFAULT 1,
        status text NOT NULL DEFAULT 'pending',
        attempt_count integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (delivery_id))""",
    "CREATE INDEX ix_dispatch_due ON dispatch_queue (status, next_attempt_at)",
    """CREATE TABLE rate_limit_windows (
        client_id text NOT NULL,
        mode text NOT NULL,
        window_start timestamptz NOT NULL,
        count integer NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, mode, window_start))""",
    """CREATE TABLE idempotency_keys (
        client_id text NOT NULL,
        key text NOT NULL,
        request_hash text NOT NULL,
        status_code integer,
        response_body jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (client_id, key))""",
]


def upgrade() -> None:
    """Create the first release's twelve tables and their indexes (later revisions change them)."""
    for statement in TABLES:
        op.execute(statement)


def downgrade() -> None:
    """Drop the twelve tables; refused while any of them holds a row (this module's docstring)."""
    REFUSAL.enforce()
    op.execute(f"DROP TABLE IF EXISTS {', '.join(NAMES)}")
