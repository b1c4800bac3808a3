"""Every migration, as the runner sends it to PostgreSQL, passes squawk, but for the findings the
allowlist keeps with their reasons (`migrations/squawk-allowlist.toml`); and a new migration that
blocks a live table (an index built without CONCURRENTLY on an existing table, a lock timeout of
its own) fails here."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lotlens_common import db
from tests.conftest import Infra, own_schema
from tests.integration.migration_lint_support import (
    Finding,
    allowlist,
    limits_set_by_a_revision,
    pg_version,
    recorded,
    revision_sql,
    revisions,
    rows_written_under_alter_lock,
    squawk,
)
from tests.k8s import tools

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def squawk_binary() -> Path:
    binary = tools() / "squawk"
    if not binary.exists():
        pytest.skip("scripts/tools.sh installs squawk on x86-64 Linux only")
    return binary


@pytest.fixture()
def empty_schema(infra: Infra, engine: Engine) -> Iterator[Engine]:
    with own_schema(infra, engine, revision=None) as own:
        yield own


def unallowed(findings: list[Finding]) -> list[str]:
    entries = allowlist()
    return [str(finding) for finding in findings if not any(entry.covers(finding) for entry in entries)]


def test_every_migration_passes_squawk_but_for_the_findings_allowed_with_a_reason(
        empty_schema: Engine, squawk_binary: Path, tmp_path: Path) -> None:
    sql = revision_sql(empty_schema, revisions())
    findings = [*squawk(squawk_binary, sql, pg_version(empty_schema), tmp_path),
                *rows_written_under_alter_lock(sql), *limits_set_by_a_revision(sql)]
    if unallowed(findings):
        pytest.fail("findings in no allowlist entry (docs/MIGRATING.md, \"Writing a schema migration\"):\n"
                    + "\n".join(unallowed(findings)))
    entries = allowlist()
    assert all(entry.why for entry in entries), [entry for entry in entries if not entry.why]
    stale = [rule for entry in entries for rule in entry.unused(findings)]
    assert not stale, f"allowlist entries no finding needs any more: {stale}"


REVISION = '''
from alembic import op

revision = "0999_new"
down_revision = "{head}"


def upgrade() -> None:
{body}
'''
# A new revision each, and what must stop it.
BLOCKING = {
    "an index built without CONCURRENTLY on an existing table": (
        '    op.execute("CREATE INDEX IF NOT EXISTS ix_lots_status ON lots (status)")',
        ["0999_new: require-concurrent-index-creation: "
         "CREATE INDEX IF NOT EXISTS ix_lots_status ON lots (status);"]),
    "a column filled in the transaction that added it": (
        '    op.execute("ALTER TABLE lots ADD COLUMN IF NOT EXISTS note text")\n'
        '    op.execute("UPDATE lots SET note = status")',
        ["0999_new: lotlens-rows-written-under-alter-lock: UPDATE lots SET note = status"]),
    # The runner's SETs precede every revision, so squawk's timeout rules always passed: a revision
    # lifting them let its ALTER queue intake and the stages behind it for as long as it waited.
    "a lock timeout of its own, lifting the runner's": (
        '    op.execute("SET lock_timeout = 0")\n'
        '    op.execute("ALTER TABLE lots ADD COLUMN IF NOT EXISTS note text")',
        ["0999_new: lotlens-limits-set-by-a-revision: SET lock_timeout = 0"]),
    "a statement timeout of its own": (
        '    op.execute("SELECT set_config(\'statement_timeout\', \'5min\', false)")\n'
        '    op.execute("ALTER TABLE lots ADD COLUMN IF NOT EXISTS note text")',
        ["0999_new: lotlens-limits-set-by-a-revision: SET statement_timeout = '5min'"]),
}


@pytest.mark.parametrize("case", list(BLOCKING))
def test_a_new_migration_that_blocks_a_live_table_fails(
        case: str, infra: Infra, engine: Engine, squawk_binary: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    body, expected = BLOCKING[case]
    head = revisions()[-1]
    with own_schema(infra, engine, head) as own:
        migrations = tmp_path / "migrations"
        shutil.copytree(db.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
        (migrations / "versions" / "0999_new.py").write_text(REVISION.format(head=head, body=body))
        monkeypatch.setattr(db, "MIGRATIONS", migrations)
        sql = revision_sql(own, ["0999_new"])
        findings = [*squawk(squawk_binary, sql, pg_version(own), tmp_path / "lint"),
                    *rows_written_under_alter_lock(sql), *limits_set_by_a_revision(sql)]
    assert unallowed(findings) == expected


def test_what_is_recorded_is_the_migrating_threads_statements_only(empty_schema: Engine) -> None:
    # The runner's lock-wait watcher queries on its own thread and connection every quarter of the
    # lock wait: on a loaded machine its BEGIN landed inside a revision's transaction, and squawk
    # reported `transaction-nesting` for a revision that nests nothing.
    def watcher() -> None:
        with empty_schema.connect() as conn:
            conn.execute(text("SELECT 2"))
            conn.rollback()

    with recorded(empty_schema) as statements, empty_schema.connect() as conn:
        conn.execute(text("SELECT 1"))
        other = threading.Thread(target=watcher)
        other.start()
        other.join()
        conn.commit()
    assert statements == ["BEGIN", "SELECT 1", "COMMIT"]
