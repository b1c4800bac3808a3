"""What a downgrade does with the rows there are: a shard's lots taken by place are written as the
older release reads them, and a downgrade whose rows the older schema cannot hold, and nothing
could bring back, refuses before its first change (and goes through once they are dealt with)."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lotlens_common import webhook_secrets
from lotlens_common.db import LockPatience, migrate
from lotlens_common.migrate import database_revisions
from lotlens_common.migrations.refusals import DowngradeRefused
from tests.conftest import ROOT, Infra, own_schema
from tests.integration.lock_waits import wait_for_a_lock_wait

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


@pytest.mark.parametrize("revision", REFUSALS)
def test_a_row_written_while_the_downgrade_counts_is_refused_not_dropped(
        infra: Infra, engine: Engine, revision: str) -> None:
    # A gateway starting (`ensure()` of a secret) or taking a submission (the outbox) writes while
    # the operator's downgrade runs: its row, committed after the count, must stop the downgrade.
    rows, named, _ = REFUSALS[revision]
    table = {"0017_shard_tokens_bigint": "stage_shards", "0011_outbox": "outbox",
             "0013_client_webhook_secrets": "client_webhook_secrets", "0001": "jobs"}[revision]
    with own_schema(infra, engine, revision) as own, ThreadPoolExecutor(1) as pool:
        with own.connect() as writer:
            writer.execute(text(rows))  # not committed yet: no count sees it
            downgrade = pool.submit(migrate, own, "-1", LockPatience(wait_s=10), True)
            wait_for_a_lock_wait(own, "the downgrade", table)
            writer.commit()
        with pytest.raises(DowngradeRefused, match=named):
            downgrade.result(timeout=30)
        assert database_revisions(own) == {revision}
        with own.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 1


# The README's `psql "$PGURL" ...` commands, each with its continuation lines, in order.
PSQL_COMMAND = re.compile(r'^psql "\$PGURL".*?(?<!\\)$', re.MULTILINE | re.DOTALL)


def test_the_readme_s_commands_bring_the_webhook_secrets_back_after_the_gateways_made_new_ones(
        infra: Infra, engine: Engine, tmp_path: Path) -> None:
    save, restore = PSQL_COMMAND.findall((ROOT / "README.md").read_text())
    with own_schema(infra, engine) as own:
        pgurl = own.url.set(drivername="postgresql").render_as_string(hide_password=False)

        def run(command: str) -> None:
            subprocess.run(["bash", "-c", command], cwd=tmp_path, env={**os.environ, "PGURL": pgurl},
                           check=True, capture_output=True)

        with own.begin() as conn:
            webhook_secrets.ensure(conn, ["acme", "globex"])
        before = secrets_of(own)
        run(save)
        migrate(own, "0011_outbox", downgrade=True)
        migrate(own)
        with own.begin() as conn:  # the gateways starting on the upgraded schema
            webhook_secrets.ensure(conn, ["acme", "globex", "initech"])
        run(restore)
        after = secrets_of(own)
        assert {client: after[client] for client in before} == before
        assert set(after) == {"acme", "globex", "initech"}  # a client added since keeps its new one


def secrets_of(own: Engine) -> dict[str, list[tuple[str, object]]]:
    with own.connect() as conn:
        rows = conn.execute(text("SELECT client_id, secret, created_at FROM client_webhook_secrets "
                                 "ORDER BY client_id, created_at")).all()
    found: dict[str, list[tuple[str, object]]] = {}
    for client, secret, created_at in rows:
        found.setdefault(client, []).append((secret, created_at))
    return found
