"""The path production takes: a database an older release made, holding rows, upgraded to head.

Rows go in as the schema stands at an early revision (the baseline, and a middle one), every later
revision runs on them, and the result is the models' schema with every row still there: a
migration that only works on an empty or already-current table (NOT NULL without a value, a type
change, a unique index over existing rows) fails here. Databases the old baseline made, with
`create_all` of the models of their day, must end at the same schema.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from lotlens_common.db import migrate
from lotlens_common.tables import metadata
from tests.conftest import Infra, own_schema
from tests.integration.schema_support import catalogue, model_differences, stamp

pytestmark = pytest.mark.integration

MIDDLE = "0013_usage"  # before 0011_outbox_client (which fills the outbox's client), 0014, 0016, 0017
LAST_BEFORE_TODAY = "0020_lots_request_order"
# A webhook URL as long as intake takes: past the 2,704 bytes of a B-tree entry (0020 indexes md5).
LONG_URL = "https://hooks.example.com/" + "x" * 8_000

BASELINE_ROWS = [
    """INSERT INTO jobs (job_id, client_id, status, api_version, languages, total_lots, created_at)
       VALUES ('job-1', 'acme', 'processing', '2.0', '["en", "de"]', 3, now() - interval '1 hour')""",
    """INSERT INTO lots (job_id, lot_id, seq, status, image_urls, webhook) VALUES
       ('job-1', 'lot-1', 1, 'completed', '["https://img.example.com/1.jpg"]', 'https://hooks.example.com/a'),
       ('job-1', 'lot-2', 2, 'pending', '[]', NULL),
       ('job-1', 'lot-3', NULL, 'pending', NULL, :long_url)""",
    "INSERT INTO descriptions VALUES ('job-1', 'lot-1', 'en', '<p>a scratch</p>')",
    "INSERT INTO openai_batches VALUES ('batch_1', 'job-1', 'vision', 'shard-1', 1, 2, now())",
    """INSERT INTO webhook_deliveries (id, batch_job_id, webhook_url, status, attempt_count, last_latency_ms)
       VALUES ('d-1', 'job-1', 'https://hooks.example.com/a', 'retrying', 1, 12.5)""",
    "INSERT INTO webhook_attempts VALUES ('d-1', 1, now(), false, 503, 12.5, 'HTTP 503', 'busy')",
    # Three lots of one job in the vision stage, enqueued one after another, one of them taken into
    # a shard by name (as an older release did); one lot of the job in translation.
    """INSERT INTO stage_lots (stage, job_id, lot_id, client_id, total_lots, work, status, shard_id,
                              enqueued_at) VALUES
       ('vision', 'job-1', 'lot-2', 'acme', 3, '{"t": "b"}', 'waiting', NULL, now() - interval '2s'),
       ('vision', 'job-1', 'lot-1', 'acme', 3, '{"t": "a"}', 'submitted', 'shard-1', now() - interval '3s'),
       ('vision', 'job-1', 'lot-3', 'acme', 3, '{"t": "c"}', 'waiting', NULL, now() - interval '1s'),
       ('translation', 'job-1', 'lot-1', 'acme', 3, '{"html": "<p>a</p>"}', 'waiting', NULL, now())""",
    # Near the integer ceiling 0017 widens.
    """INSERT INTO stage_shards (shard_id, stage, job_id, client_id, attempt, status, batch_id, lot_count,
                                estimated_tokens)
       VALUES ('shard-1', 'vision', 'job-1', 'acme', 1, 'submitted', 'batch_1', 1, 2147483000)""",
    "INSERT INTO stage_jobs (stage, job_id, cancelled) VALUES ('vision', 'job-1', false)",
    "INSERT INTO dispatch_queue (delivery_id, job_id, client_id, webhook_url, attempt_count) "
    "VALUES ('d-1', 'job-1', 'acme', 'https://hooks.example.com/a', 1)",
    "INSERT INTO rate_limit_windows VALUES ('acme', 'batch', date_trunc('minute', now()), 4)",
    """INSERT INTO idempotency_keys (client_id, key, request_hash, status_code, response_body)
       VALUES ('acme', 'key-1', 'sha256:ab', 201, '{"job_id": "job-1"}')""",
]
# What 0011_outbox and the 0013 revisions added, as their release wrote it: the outbox has no
# client column yet (0011_outbox_client fills it from each row's envelope).
MIDDLE_ROWS = [
    """INSERT INTO outbox (topic, job_id, event_type, payload, published_at) VALUES
       ('submissions', 'job-1', 'JobSubmitted', '{"type": "JobSubmitted", "client_id": "acme"}', now()),
       ('submissions', 'job-2', 'JobSubmitted', '{"type": "JobSubmitted", "client_id": "zeta"}', NULL),
       ('submissions', 'job-2', 'JobCancelled', '{"type": "JobCancelled", "client_id": "zeta"}', NULL)""",
    "INSERT INTO client_webhook_secrets (client_id, secret) VALUES ('acme', 'whsec_AAAA')",
    "INSERT INTO client_webhook_secrets VALUES ('acme', 'whsec_BBBB', now(), now() + interval '1 day')",
    """INSERT INTO jobs (job_id, client_id, status, total_lots, retry_of, usage)
       VALUES ('job-2', 'zeta', 'cancelled', 1, 'job-1', '{"input_tokens": 10}')""",
    "UPDATE lots SET usage = '{\"vision\": {\"input_tokens\": 10}}' WHERE lot_id = 'lot-1'",
]


Rows = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


def rows(conn: Connection) -> Rows:
    """Every row of every model table the schema has, by primary key."""
    tables = set(conn.execute(text(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")).scalars())
    found: Rows = {}
    for table in metadata.sorted_tables:
        if table.name in tables:
            key = [column.name for column in table.primary_key]
            found[table.name] = {tuple(row[k] for k in key): dict(row)
                                 for row in conn.execute(text(f"SELECT * FROM {table.name}")).mappings()}
    return found


def assert_kept(before: Rows, after: Rows) -> None:
    """Each row written before the upgrade is there after it, every value it had unchanged (a
    revision may add rows, as 0014 adds a stage's missing `stage_jobs`)."""
    for table, old_rows in before.items():
        kept = {key: {column: after[table][key][column] for column in row}
                for key, row in old_rows.items() if key in after[table]}
        assert kept == old_rows, table


def with_rows(conn: Connection, statements: list[str]) -> None:
    """Run the inserts of an older release's rows."""
    for statement in statements:
        conn.execute(text(statement), {"long_url": LONG_URL} if ":long_url" in statement else {})


def after_baseline_checks(conn: Connection) -> None:
    """What the revisions after the baseline derived from its rows, and what the head accepts."""
    # 0014 counted the arrived lots; 0016 numbered each job's queue in enqueue order.
    jobs = conn.execute(text("SELECT stage, arrived, last_place, claimed_place FROM stage_jobs "
                             "ORDER BY stage"))
    assert [tuple(j) for j in jobs] == [("translation", 1, 1, 0), ("vision", 3, 3, 0)]
    places = conn.execute(text("SELECT lot_id, place FROM stage_lots WHERE stage = 'vision' ORDER BY place"))
    assert [tuple(p) for p in places] == [("lot-1", 1), ("lot-2", 2), ("lot-3", 3)]
    # An older release's insert (no place) is placed at the end of its job's queue by 0016's trigger.
    conn.execute(text("INSERT INTO stage_lots (stage, job_id, lot_id, client_id, total_lots, work) "
                      "VALUES ('vision', 'job-1', 'lot-4', 'acme', 4, '{}')"))
    assert conn.execute(text("SELECT place FROM stage_lots WHERE lot_id = 'lot-4'")).scalar_one() == 4
    # 0018's counter starts at 0 on queued deliveries; 0017's bigint holds 2.3 billion tokens.
    assert conn.execute(text("SELECT interruptions, traceparent FROM dispatch_queue")).one() == (0, None)
    conn.execute(text("UPDATE stage_shards SET estimated_tokens = 2300000000"))
    # 0020's indexes serve the request order over the rows that were there, the long URL included.
    conn.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(conn.execute(text(
        "EXPLAIN SELECT lot_id FROM lots WHERE job_id = 'job-1' AND md5(webhook) = md5(:u) AND webhook = :u "
        "ORDER BY coalesce(seq, 2147483647), lot_id"), {"u": LONG_URL}).scalars())
    assert "ix_lots_webhook_order" in plan, plan


def test_rows_written_at_the_baseline_survive_every_migration_and_the_schema_is_the_models(
        infra: Infra, engine: Engine) -> None:
    with own_schema(infra, engine, "0001") as old:
        with old.begin() as conn:
            with_rows(conn, BASELINE_ROWS)
            before = rows(conn)
        migrate(old)
        with old.begin() as conn:
            assert_kept(before, rows(conn))
            after_baseline_checks(conn)
        assert model_differences(old) == []


def test_rows_written_at_a_middle_revision_survive_every_migration_and_the_schema_is_the_models(
        infra: Infra, engine: Engine) -> None:
    with own_schema(infra, engine, MIDDLE) as old:
        with old.begin() as conn:
            with_rows(conn, BASELINE_ROWS + MIDDLE_ROWS)
            before = rows(conn)
        migrate(old)
        with old.begin() as conn:
            assert_kept(before, rows(conn))
            after_baseline_checks(conn)
            clients = conn.execute(text("SELECT event_type, client_id FROM outbox ORDER BY id")).all()
            assert [tuple(c) for c in clients] == [("JobSubmitted", "acme"), ("JobSubmitted", "zeta"),
                                                   ("JobCancelled", "zeta")]
        assert model_differences(old) == []


def test_a_database_the_old_baseline_made_and_migrated_to_0020_upgrades_to_the_models_schema(
        infra: Infra, engine: Engine) -> None:
    # The old 0001 ran `create_all` of the models: a database made by today's code before the
    # baseline was frozen has today's tables, stamped at the head of its day.
    with own_schema(infra, engine) as fresh, own_schema(infra, engine, None) as old:
        metadata.create_all(old)
        stamp(old, LAST_BEFORE_TODAY)
        migrate(old)
        assert model_differences(old) == []
        old_schema, new_schema = catalogue(old), catalogue(fresh)
    # Stamping skipped 0016's trigger, which such a database got from 0016 itself (next test).
    assert {part: found for part, found in old_schema.items() if part != "triggers"} == \
           {part: found for part, found in new_schema.items() if part != "triggers"}


def test_a_database_the_old_baseline_made_from_empty_reaches_the_same_schema_as_a_new_one(
        infra: Infra, engine: Engine) -> None:
    # What the old code did on an empty database: 0001 made today's tables, and every later
    # revision then ran on them (each one idempotent for that reason).
    with own_schema(infra, engine) as fresh, own_schema(infra, engine, None) as old:
        metadata.create_all(old)
        stamp(old, "0001")
        migrate(old)
        assert catalogue(old) == catalogue(fresh)
