"""PostgreSQL tables: the read models (projected by result-store) and the services' work tables.

Read models: jobs, lots, descriptions, openai_batches, webhook_deliveries, webhook_attempts.
Work tables (each owned by one service, read by no other service; `lotlens-admin jobs show` reads
some for on-call): stage_lots, stage_shards, stage_jobs and stage_queue_holds (vision-batcher and
translator, told apart by `stage`), dispatch_queue (webhook-dispatcher), outbox, rate_limit_windows
and idempotency_keys (gateway).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()


def _now() -> Column[object]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


jobs = Table(
    "jobs", metadata,
    Column("job_id", Text, primary_key=True),
    Column("client_id", Text),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("api_version", Text),
    Column("languages", JSONB),
    # Nullable: lot events can arrive before JobSubmitted is projected (different topics).
    Column("total_lots", Integer),
    Column("processed_lots", Integer, nullable=False, server_default="0"),
    Column("failed_lots", Integer, nullable=False, server_default="0"),
    Column("images_processed", Integer, nullable=False, server_default="0"),
    Column("webhook_configured", Boolean, nullable=False, server_default="false"),
    Column("error_message", Text),
    Column("created_at", DateTime(timezone=True)),
    _now(),
    Column("estimated_completion", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    # Set once JobCompleted is acknowledged by Kafka, so a crash in between re-emits it.
    Column("completion_published", Boolean, nullable=False, server_default="false"),
    # The job whose failed lots this job resubmits (`POST .../retry-failed`); the other direction
    # is read through the index.
    Column("retry_of", Text),
    # The job's tokens and estimated cost (a JobUsage), summed from its lots once it is terminal.
    Column("usage", JSONB),
    Index("ix_jobs_client_created", "client_id", "created_at"),
    Index("ix_jobs_retry_of", "retry_of"),
)

lots = Table(
    "lots", metadata,
    Column("job_id", Text, nullable=False),
    Column("lot_id", Text, nullable=False),
    Column("seq", Integer),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("additional_info", Text),
    Column("image_urls", JSONB),
    Column("webhook", Text),
    Column("processed_images", Integer, nullable=False, server_default="0"),
    Column("missing_images", JSONB, nullable=False, server_default="[]"),
    Column("error_message", Text),
    Column("processed_at", DateTime(timezone=True)),
    # Tokens and estimated cost of the lot's model answers, per stage: {"vision": Usage, ...}.
    Column("usage", JSONB),
    # Failed at translation while its VisionCompleted (its vision usage) is not projected yet: the
    # job waits for it before it settles (completed lots wait by `processed_images = 0`).
    Column("awaiting_vision", Boolean, nullable=False, server_default="false"),
    _now(),
    PrimaryKeyConstraint("job_id", "lot_id"),
    # Pages filled to 25% (0037; a rebuild's shadow copy too, `shadow._store_like`): a lot is
    # COPYed in, then updated twice (its vision result, its translation) in columns no index or
    # index predicate reads, so each update is HOT, writing no index entry, if its new version
    # fits on the page. Full pages (COPY fills them) sent 99% of the updates elsewhere, each
    # writing an entry in all three indexes. At 25% a bench lot's three versions (~450, ~650 and
    # ~850 bytes) fit on its page unpruned; at 30% only once pruned, which an open snapshot
    # holds off. A 50,000-lot bench job through the handler: HOT 0.5% -> 100%, the database's
    # CPU for the two updates 4.0 -> 3.0 s, median (docs/TABLES.md, "Storage parameters").
    postgresql_with={"fillfactor": 25},
)

# A job's lots in request order: by `seq`, then lot id, and a lot projected before its LotSubmitted
# (no `seq` yet) last. Every reader sorts by this one expression, so one index serves them all; its
# constant is written into the SQL, not bound, as an index expression matches a constant only.
LAST_SEQ = 2**31 - 1
LOT_REQUEST_ORDER = (func.coalesce(lots.c.seq, literal_column(str(LAST_SEQ))), lots.c.lot_id)
Index("ix_lots_request_order", lots.c.job_id, *LOT_REQUEST_ORDER)
# One webhook URL's lots, found by the URL's hash (a B-tree entry holds at most 2,704 bytes; intake
# takes URLs of 8,192 characters): `WHERE md5(webhook) = md5(:url) AND webhook = :url`.
Index("ix_lots_webhook_order", lots.c.job_id, func.md5(lots.c.webhook), *LOT_REQUEST_ORDER,
      postgresql_where=lots.c.webhook.is_not(None))

descriptions = Table(
    "descriptions", metadata,
    Column("job_id", Text, nullable=False),
    Column("lot_id", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("damages", Text, nullable=False),
    PrimaryKeyConstraint("job_id", "lot_id", "language"),
)

openai_batches = Table(
    "openai_batches", metadata,
    Column("batch_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False, index=True),
    Column("stage", Text, nullable=False),
    Column("shard_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("lot_count", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", Text, primary_key=True),
    Column("batch_job_id", Text, nullable=False, index=True),
    Column("webhook_url", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("error_message", Text),
    Column("last_status_code", Integer),
    Column("last_latency_ms", Float),
    Column("next_attempt_at", DateTime(timezone=True)),
)

webhook_attempts = Table(
    "webhook_attempts", metadata,
    Column("delivery_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("succeeded", Boolean, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Float),
    Column("error", Text),
    Column("response_body", Text),
    PrimaryKeyConstraint("delivery_id", "attempt"),
)

# --- work tables of the batch stages (vision-batcher, translator) ---

stage_lots = Table(
    "stage_lots", metadata,
    Column("stage", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("lot_id", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("total_lots", Integer, nullable=False),
    # The request inputs the stage needs (lot text, image urls, english html, languages).
    Column("work", JSONB, nullable=False),
    # Work fields the previous release does not know (`StageWork.WRITTEN_APART`); NULL: none.
    Column("work_ahead", JSONB),
    # waiting -> done | failed | cancelled | skipped. A waiting lot whose `place` is past its job's
    # `claimed_place` waits for a shard; one at or before it is in the shard whose places hold it.
    # `submitted` with a `shard_id`: a lot taken into a shard by name (an adopted batch).
    Column("status", Text, nullable=False, server_default="waiting"),
    Column("shard_id", Text),
    # The lot's place in its job's queue in this stage; a lot sent back gets a new one at the end.
    Column("place", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("enqueued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _now(),
    PrimaryKeyConstraint("stage", "job_id", "lot_id"),
    Index("ix_stage_lots_place", "stage", "job_id", "place", unique=True),
    # Pages filled to half: a lot's one update (settled done) then fits on its own page, and
    # PostgreSQL makes it without new index entries (migration 0036).
    postgresql_with={"fillfactor": 50},
)

stage_shards = Table(
    "stage_shards", metadata,
    Column("shard_id", Text, primary_key=True),
    Column("stage", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    # building (lots claimed, batch maybe created) -> submitted -> collected | abandoned
    Column("status", Text, nullable=False, server_default="building"),
    Column("batch_id", Text),
    Column("batch_status", Text),
    # When OpenAI created the batch (its `created_at`), set as it is recorded; NULL: recorded before
    # migration 0038. The oldest batch's age is read from it (the claim's `created_at` without it).
    Column("batch_created_at", DateTime(timezone=True)),
    Column("lot_count", Integer, nullable=False),
    # The places of its job's queue the shard took (NULL: lots taken by name, `stage_lots.shard_id`).
    Column("first_place", BigInteger),
    Column("last_place", BigInteger),
    Column("estimated_tokens", BigInteger, nullable=False, server_default="0"),
    # Set by the stage while the shard's batch cannot be read by id (401/403/404) and no listing
    # told its fate: the shard holds the stage paused (`lotlens-admin shards paused`).
    Column("unreadable_since", DateTime(timezone=True)),
    Column("unreadable_reason", Text),
    # An operator's decision on such a shard (`lotlens-admin shards release`): `resend` or `fail`,
    # who, when and why; the stage carries it out and closes the shard (batch_status `released`).
    Column("release", Text),
    Column("released_by", Text),
    Column("released_at", DateTime(timezone=True)),
    Column("release_reason", Text),
    # Set by the stage on a `building` shard whose batch OpenAI refused for the quota (429
    # `insufficient_quota`): the stage-wide pause every instance holds (`stage/quota.py`), since
    # when, why, and when its next try is due; cleared when any batch of the stage is created.
    Column("quota_paused_since", DateTime(timezone=True)),
    Column("quota_reason", Text),
    Column("quota_retry_at", DateTime(timezone=True)),
    # When the stage last asked OpenAI to create the shard's batch, unless it was refused (then
    # NULL): recovery waits a while before building a shard whose batch may still land.
    Column("create_asked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _now(),
    Index("ix_stage_shards_status", "stage", "status"),
)

# Each stage's hold after OpenAI's enqueued-token queue for its model refused a batch
# (`stage/core/queue_hold.py`), shared by its replicas; a row from the stage's first refusal on.
stage_queue_holds = Table(
    "stage_queue_holds", metadata,
    Column("stage", Text, primary_key=True),
    Column("refusals", Integer, nullable=False),  # in a row
    Column("refused_at", DateTime(timezone=True), nullable=False),  # the latest
    Column("held_until", DateTime(timezone=True), nullable=False),  # no new batch is created before
    _now(),
)

stage_jobs = Table(
    "stage_jobs", metadata,
    Column("stage", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("cancelled", Boolean, nullable=False, server_default="false"),
    # Lots of the job that ever arrived in the stage, counted as they are inserted: the batching
    # rule's "has every lot arrived?" without counting the job's rows every tick.
    Column("arrived", Integer, nullable=False, server_default="0"),
    # The job's queue: the last place handed out, and the last one taken into a shard. A claim
    # moves `claimed_place` on instead of writing each lot it takes.
    Column("last_place", BigInteger, nullable=False, server_default="0"),
    Column("claimed_place", BigInteger, nullable=False, server_default="0"),
    _now(),
    PrimaryKeyConstraint("stage", "job_id"),
)

# --- work table of the webhook dispatcher ---

dispatch_queue = Table(
    "dispatch_queue", metadata,
    Column("delivery_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("webhook_url", Text, nullable=False),
    Column("part", Integer, nullable=False, server_default="1"),
    Column("total_parts", Integer, nullable=False, server_default="1"),
    # pending -> sending (leased to one instance) -> pending | delivered | failed
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    # Of those attempts, the ones whose outcome was never recorded (the instance died or could
    # not record it): they do not count against the retry schedule.
    Column("interruptions", Integer, nullable=False, server_default="0"),
    # Of those, the ones of attempts handed back unsent (their failure could not be marked): they
    # gave their attempt number back, so the schedule does not subtract them.
    Column("unsent_interruptions", Integer, nullable=False, server_default="0"),
    # Interrupted attempts whose records are not known published yet, [{"attempt": n, "at": t}]:
    # whoever claims the delivery next publishes them again (the projection keeps one of each).
    Column("unpublished_interruptions", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # False from a claim until its attempt's POST starts: a claim whose lease ran out with it
    # false was never sent, and is made again rather than recorded as interrupted.
    Column("post_started", Boolean, nullable=False, server_default="true"),
    # When its attempts first could not start (no key, job not in the read models), NULL since its
    # last attempt: it is given up `LOTLENS_WEBHOOK_UNREADY_GIVE_UP_H` after.
    Column("unready_since", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The job's W3C trace context, so the POST joins the job's trace (NULL when tracing is off).
    Column("traceparent", Text),
    # Which lots its part carries, and those still changing as they were (`payloads.PartPlan`);
    # NULL: scheduled by a release before plans.
    Column("part_plan", JSONB),
    _now(),
    Index("ix_dispatch_due", "status", "next_attempt_at"),
    # The open rows per client, earliest due first: the dispatcher's claim takes clients in turns.
    Index("ix_dispatch_client_due", "client_id", "next_attempt_at",
          postgresql_where=text("status IN ('pending', 'sending')")),
)

# --- work tables of the gateway ---

rate_limit_windows = Table(
    "rate_limit_windows", metadata,
    Column("client_id", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("count", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("client_id", "mode", "window_start"),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("client_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("status_code", Integer),
    Column("response_body", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # SHA-256 of the submission's `X-Signature` header (of "" without one); NULL: written by a
    # release before it, or not a submission. A job resent while intake is busy is replayed only
    # to a request carrying the same header (its body is not parsed, so its client is not known).
    Column("header_signature_sha256", Text),
    # When the request holding the reservation last said it is alive, by the database's clock
    # (NULL: a release before renewals; `created_at` stands for it). Its lease runs from here.
    Column("renewed_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("client_id", "key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# Events the gateway accepted, written in the request's transaction and relayed to Kafka in
# `id` order (one relay per topic at a time). Kept `outbox_retention_s` after publishing so the
# gateway's reads can overlay facts the result-store has not projected yet.
outbox = Table(
    "outbox", metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    # The encoded envelope, exactly the bytes the relay publishes (JSON, so text).
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    # A job's events of a type, in `id` order (the lots pages and results of a job not projected yet).
    Index("ix_outbox_job_events", "job_id", "event_type", "id"),
    # A client's accepted and cancelled jobs the read models may not show yet (the jobs list).
    Index("ix_outbox_client_events", "client_id", "event_type",
          postgresql_where=text("event_type IN ('JobSubmitted', 'JobCancelled')")),
    # A client's webhook redelivery requests in the last 10 minutes (the gateway's per-client limit).
    Index("ix_outbox_client_redeliveries", "client_id", "created_at",
          postgresql_where=text("event_type = 'WebhookRedeliveryRequested'")),
    # No index names `published_at`, and pages are filled to half: the relay's marking of a row
    # published is heap-only (migration 0039; the relay reads from a floor, `outbox_floor`).
    postgresql_with={"fillfactor": 50},
)
# The read models, in the order every writer locks them (result-store batches, a rebuild's swap).
READ_MODELS: tuple[Table, ...] = (jobs, lots, descriptions, openai_batches, webhook_deliveries,
                                  webhook_attempts)

# Each client's Standard Webhooks signing secrets (`whsec_<base64>`): the newest signs first;
# a rotated-out secret keeps signing until `expires_at`, so receivers can switch without a gap.
client_webhook_secrets = Table(
    "client_webhook_secrets", metadata,
    Column("client_id", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("client_id", "secret"),
    # One current (never-expiring) secret per client: two gateways starting at once make one.
    Index("ux_client_webhook_secrets_current", "client_id", unique=True,
          postgresql_where=text("expires_at IS NULL")),
)
