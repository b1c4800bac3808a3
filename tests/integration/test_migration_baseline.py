"""Revision 0001 makes the schema as it was when 0001 was written, not today's models: otherwise
every later revision is a no-op on a new database, and no test walks the path production takes."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from tests.conftest import Infra, own_schema

pytestmark = pytest.mark.integration

BASELINE_TABLES = {"jobs", "lots", "descriptions", "openai_batches", "webhook_deliveries",
                   "webhook_attempts", "stage_lots", "stage_shards", "stage_jobs", "dispatch_queue",
                   "rate_limit_windows", "idempotency_keys"}


def test_revision_0001_alone_makes_no_table_or_column_a_later_revision_adds(
        infra: Infra, engine: Engine) -> None:
    with own_schema(infra, engine, "0001") as own:
        schema = inspect(own)
        tables = set(schema.get_table_names()) - {"alembic_version"}
        columns = {table: {column["name"] for column in schema.get_columns(table)} for table in tables}
        indexes = {index["name"] for table in tables for index in schema.get_indexes(table)}
    assert tables == BASELINE_TABLES  # outbox: 0011_outbox; client_webhook_secrets: 0013_*
    assert "interruptions" not in columns["dispatch_queue"]  # 0018
    assert "traceparent" not in columns["dispatch_queue"]  # 0015
    assert {"retry_of", "usage"}.isdisjoint(columns["jobs"])  # 0013_job_retry_of, 0013_usage
    assert {"arrived", "last_place", "claimed_place"}.isdisjoint(columns["stage_jobs"])  # 0014, 0016
    assert "place" not in columns["stage_lots"]  # 0016
    assert "header_signature_sha256" not in columns["idempotency_keys"]  # 0029
    assert "awaiting_vision" not in columns["lots"]  # 0030
    assert "ix_idempotency_keys_created_at" not in indexes  # 0002
    assert {"ix_lots_request_order", "ix_lots_webhook_order"}.isdisjoint(indexes)  # 0020
