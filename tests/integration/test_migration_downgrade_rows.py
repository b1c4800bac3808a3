"""What a downgrade does with the rows there are: a shard's lots taken by place are written as the
older release reads them, and a downgrade whose rows the older schema cannot hold, and nothing
could bring back, refuses before its first change (and goes through once they are dealt with)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from lotlens_common.db import migrate
from lotlens_common.migrate import database_revisions
from lotlens_common.migrations.refusals import DowngradeRefused
from tests.conftest import Infra, own_schema

pytestmark = pytest.mark.integration

PLACES = "0016_stage_places"
# A job of the vision stage: lots 1-2 in a collected shard by place, lot 3 in a submitted one,
# lot 4 still waiting past the claimed place, lot 5 taken by name (an adopted batch).
STAGE_ROWS = [
    """INSERT INTO stage_jobs (stage, job_id, arrived, last_place, claimed_place)
       VALUES ('vision', 'job-1', 5, 5, 3)""",
    """INSERT INTO stage_shards (shard_id, stage, job_id, client_id, attempt, status, lot_count,
                                first_place, last_place) VALUES
       ('shard-a', 'vision', 'job-1', 'acme', 1, 'collected', 2, 1, 2),
       ('shard-b', 'vision', 'job-1', 'acme', 1, 'submitted', 1, 3, 3),
       ('shard-n', 'vision', 'job-1', 'acme', 1, 'submitted', 1, NULL, NULL)""",
    """INSERT INTO stage_lots (stage, job_id, lot_id, client_id, total_lots, work, status, shard_id, place,
                              attempts) VALUES
       ('vision', 'job-1', 'lot-1', 'acme', 5, '{}', 'waiting', NULL, 1, 0),
       ('vision', 'job-1', 'lot-2', 'acme', 5, '{}', 'waiting', NULL, 2, 1),
       ('vision', 'job-1', 'lot-3', 'acme', 5, '{}', 'waiting', NULL, 3, 0),
       ('vision', 'job-1', 'lot-4', 'acme', 5, '{}', 'waiting', NULL, 4, 0),
       ('vision', 'job-1', 'lot-5', 'acme', 5, '{}', 'submitted', 'shard-n', 5, 1)""",
]


def test_lots_a_shard_holds_by_place_are_written_as_taken_by_name_when_places_are_undone(
        infra: Infra, engine: Engine) -> None:
    with own_schema(infra, engine, PLACES) as own:
        with own.begin() as conn:
            for statement in STAGE_ROWS:
                conn.execute(text(statement))
        migrate(own, "-1", downgrade=True)
        with own.connect() as conn:
            lots = conn.execute(text(
                "SELECT lot_id, status, shard_id, attempts FROM stage_lots ORDER BY lot_id"))
            # As the older release claimed: `submitted`, the shard named, the attempt counted.
            assert [tuple(lot) for lot in lots] == [
                ("lot-1", "submitted", "shard-a", 1), ("lot-2", "submitted", "shard-a", 2),
                ("lot-3", "submitted", "shard-b", 1), ("lot-4", "waiting", None, 0),
                ("lot-5", "submitted", "shard-n", 1)]
        assert database_revisions(own) == {"0014_stage_job_arrivals"}


# revision: (rows the older schema cannot hold, the table the refusal names, what the operator
# does about them, as the refusal says).
REFUSALS = {
    "0017_shard_tokens_bigint": (
        "INSERT INTO stage_shards (shard_id, stage, job_id, client_id, attempt, lot_count, estimated_tokens) "
        "VALUES ('shard-1', 'vision', 'job-1', 'acme', 1, 50000, 2300000000)",
        "stage_shards", "UPDATE stage_shards SET estimated_tokens = 2147483647"),
    "0011_outbox": (
        "INSERT INTO outbox (topic, job_id, event_type, payload) "
        "VALUES ('submissions', 'job-1', 'JobSubmitted', '{}')",
        "outbox", "UPDATE outbox SET published_at = now()"),  # published rows are dropped: Kafka has them
    "0013_client_webhook_secrets": (
        "INSERT INTO client_webhook_secrets (client_id, secret) VALUES ('acme', 'whsec_AAAA')",
        "client_webhook_secrets", "DELETE FROM client_webhook_secrets"),
    "0001": ("INSERT INTO jobs (job_id) VALUES ('job-1')", "tables hold rows", "DELETE FROM jobs"),
}


@pytest.mark.parametrize("revision", REFUSALS)
def test_a_downgrade_that_would_lose_what_nothing_brings_back_refuses_and_changes_nothing(
        infra: Infra, engine: Engine, revision: str) -> None:
    rows, named, dealt_with = REFUSALS[revision]
    with own_schema(infra, engine, revision) as own:
        with own.begin() as conn:
            conn.execute(text(rows))
        with pytest.raises(DowngradeRefused, match=named):
            migrate(own, "-1", downgrade=True)
        assert database_revisions(own) == {revision}
        with own.begin() as conn:
            conn.execute(text(dealt_with))
        migrate(own, "-1", downgrade=True)
        assert revision not in database_revisions(own)
