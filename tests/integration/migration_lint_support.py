"""Holding the migrations to squawk (sbdchd/squawk, the PostgreSQL migration linter).

Each revision's SQL is what the migration runner really sends: `db.migrate` is run one revision
at a time on a real PostgreSQL and every statement is recorded as psycopg2 sent it, with the
transactions around them (Alembic's one per revision, none in an index build's autocommit block).
Offline rendering would not do: `concurrent_indexes` asks the database before it builds, and the
runner's session settings are no part of a revision. Two edits make it squawk's to read: Alembic's
bookkeeping (`alembic_version`) is left out, and each `set_config(name, value, false)` of a `SELECT`, which is
how the runner sets its `lock_timeout`, is written as the `SET` it is (squawk looks for `SET`).

Two things squawk does not see are checked here too (`rows_written_under_alter_lock`,
`limits_set_by_a_revision`). The allowlist
(`ALLOWLIST`, beside the revisions) names each finding that stands, by revision and rule, with the
reason it does.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import Connection, Engine, event

from lotlens_common import db

ALLOWLIST = db.MIGRATIONS / "squawk-allowlist.toml"
ANY_REVISION = "*"
BACKFILL_RULE = "lotlens-rows-written-under-alter-lock"
_ALTERED = re.compile(r"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(\w+)", re.IGNORECASE)
_WRITTEN = re.compile(r"(?:UPDATE|INSERT INTO|DELETE FROM) (?:ONLY )?(\w+)", re.IGNORECASE)
LIMITS_RULE = "lotlens-limits-set-by-a-revision"
# A statement that sets a lock or statement timeout (`SET [LOCAL]`, `RESET`, `ALTER ... SET`,
# `set_config`); reading one (`current_setting`) is not.
_LIMIT_SET = re.compile(r"^(?:SET|RESET|ALTER\b.*\bSET)\b.*\b(?:lock|statement)_timeout\b"
                        r"|set_config\(\s*'(?:lock|statement)_timeout'", re.IGNORECASE | re.DOTALL)
# What the runner sends around every revision (`db._run`): its lock and limits before, the
# limits reset and the lock released after.
_RUNNER_BEFORE = ("BEGIN", r"SELECT pg_try_advisory_lock\(\d+\)", "COMMIT", "BEGIN",
                  r"SET lock_timeout = '\d+ms'", "SET statement_timeout = '0'",
                  "SET idle_in_transaction_session_timeout = '0'", "COMMIT")
_RUNNER_AFTER = ("BEGIN", "RESET lock_timeout", "RESET statement_timeout",
                 "RESET idle_in_transaction_session_timeout", r"SELECT pg_advisory_unlock\(\d+\)", "COMMIT")
# `concurrent_indexes`: the runner's lock timeout lifted for a concurrent build or drop (which queues
# no reads or writes) after reading it, and put back as read when it ends.
_READ_LOCK_TIMEOUT, _LIFTED = "SELECT current_setting('lock_timeout')", "SET lock_timeout = 0"
_SESSION_SETTINGS = re.compile(r"\s*SELECT (?:set_config\('\w+', '[^']*', false\)(?:,\s*)?)+\s*")
_SESSION_SETTING = re.compile(r"set_config\('(\w+)', '([^']*)', false\)")


@dataclass(frozen=True)
class Finding:
    """One squawk warning: the revision, the rule, and the statement it is about."""

    revision: str
    rule: str
    statement: str

    def __str__(self) -> str:
        return f"{self.revision}: {self.rule}: {self.statement}"


@dataclass(frozen=True)
class Allowance:
    """An allowlist entry: some rules' findings in a revision (or in every one), and why they stand."""

    revision: str
    rules: tuple[str, ...]
    why: str

    def covers(self, finding: Finding) -> bool:
        """The finding is of one of this entry's rules, in its revision."""
        return finding.rule in self.rules and self.revision in (finding.revision, ANY_REVISION)

    def unused(self, findings: Iterable[Finding]) -> list[str]:
        """This entry's rules that no finding needs."""
        found = {finding.rule for finding in findings if self.covers(finding)}
        return [f"{self.revision}: {rule}" for rule in self.rules if rule not in found]


def revisions() -> list[str]:
    """The revisions, oldest first (the chain is one line: `test_migration_revisions`)."""
    return [script.revision for script in ScriptDirectory(str(db.MIGRATIONS)).walk_revisions()][::-1]


def revision_sql(engine: Engine, targets: Sequence[str]) -> dict[str, list[str]]:
    """Migrate to each target in turn; the statements the runner sent for each, as squawk reads them."""
    sql: dict[str, list[str]] = {}
    for target in targets:
        with recorded(engine) as statements:
            db.migrate(engine, target)
        sql[target] = list(_for_squawk(statements))
    return sql


@contextmanager
def recorded(engine: Engine) -> Iterator[list[str]]:
    """The statements this thread sent on `engine` meanwhile, each transaction between BEGIN and COMMIT.

    This thread's only: the runner's lock-wait watcher (`db._blockers_watched`) queries on a thread
    and connection of its own, and its transactions, interleaved, read as nested ones.
    """
    statements: list[str] = []
    open_transaction = [False]
    migrating = threading.get_ident()

    def before(conn: Connection, *_: Any) -> None:
        if threading.get_ident() != migrating:
            return
        dbapi: Any = conn.connection.dbapi_connection  # psycopg2's
        # psycopg2 sends BEGIN itself before a statement outside autocommit with none open.
        if not dbapi.autocommit and dbapi.get_transaction_status() == TRANSACTION_STATUS_IDLE:
            statements.append("BEGIN")
            open_transaction[0] = True

    def after(_conn: Connection, cursor: Any, *_: Any) -> None:
        if threading.get_ident() == migrating:
            statements.append(cursor.query.decode())

    def ended(_conn: Connection) -> None:
        if open_transaction[0] and threading.get_ident() == migrating:
            statements.append("COMMIT")
            open_transaction[0] = False

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before), ("after_cursor_execute", after),
        ("commit", ended), ("rollback", ended)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield statements
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


def _for_squawk(statements: Iterable[str]) -> Iterator[str]:
    for statement in statements:
        if "alembic_version" in statement:
            continue
        if _SESSION_SETTINGS.fullmatch(statement):
            yield from (f"SET {name} = '{value}'" for name, value in _SESSION_SETTING.findall(statement))
            continue
        yield statement.strip()


def squawk(binary: Path, sql: dict[str, list[str]], pg_version: str, workdir: Path) -> list[Finding]:
    """Run squawk on each revision's script; its findings, each with the statement it names."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ".squawk.toml").write_text("")  # squawk looks upwards for one: the defaults, here
    files, scripts = {}, {}
    for number, (revision, statements) in enumerate(sql.items()):
        files[f"{number:04d}.sql"] = revision
        scripts[revision] = "".join(statement + ";\n" for statement in statements)
        (workdir / f"{number:04d}.sql").write_text(scripts[revision])
    done = subprocess.run([str(binary), "--reporter", "json", "--pg-version", pg_version, *files],
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and done.stdout.strip(), done.stderr
    findings = []
    for warning in json.loads(done.stdout):
        revision = files[Path(warning["file"]).name]
        lines = scripts[revision].splitlines()[warning["line"]:warning["line_end"] + 1]  # 0-based
        findings.append(Finding(revision, warning["rule_name"], " ".join(line.strip() for line in lines)))
    return findings


def rows_written_under_alter_lock(sql: dict[str, list[str]]) -> list[Finding]:
    """Rows written to a table in the transaction that altered it, which squawk does not look for.

    `ALTER TABLE` holds its ACCESS EXCLUSIVE lock until the transaction ends, so a backfill after
    it (`UPDATE` every row, `INSERT ... SELECT`) keeps every read and write of the table waiting
    for the whole backfill: 0011_outbox_client held the outbox 30 s for a million rows.
    """
    findings = []
    for revision, statements in sql.items():
        altered: set[str] = set()
        for statement in statements:
            if statement in ("BEGIN", "COMMIT"):
                altered.clear()
            elif table := _ALTERED.match(statement):
                altered.add(table[1])
            elif (table := _WRITTEN.match(statement)) and table[1] in altered:
                findings.append(Finding(revision, BACKFILL_RULE, " ".join(statement.split())))
    return findings


def limits_set_by_a_revision(sql: dict[str, list[str]]) -> list[Finding]:
    """Lock or statement timeouts a revision sets itself, which squawk cannot tell from the runner's.

    The runner's `SET`s precede every revision, so squawk's timeout rules always pass; a revision's
    `SET lock_timeout = 0` then let its `ALTER` hold intake and the stages behind it for as long as
    it waited, and its own `statement_timeout` cancelled an index build the Job retried for ever.
    docs/MIGRATING.md: the runner bounds lock waits; a revision sets no limits of its own.
    """
    findings = []
    for revision, statements in sql.items():
        own = _without(_without(statements, _RUNNER_BEFORE), _RUNNER_AFTER)
        lifted = False
        for before, statement in zip(["", *own], own, strict=False):
            if statement == _LIFTED and before == _READ_LOCK_TIMEOUT:
                lifted = True
            elif lifted and statement.startswith("SET lock_timeout = '"):
                lifted = False  # put back as it was read
            elif _LIMIT_SET.search(statement):
                findings.append(Finding(revision, LIMITS_RULE, " ".join(statement.split())))
    return findings


def _without(statements: Sequence[str], frame: Sequence[str]) -> list[str]:
    """`statements` with each run of them that matches `frame`, pattern by pattern, left out."""
    kept, at = [], 0
    while at < len(statements):
        window = statements[at:at + len(frame)]
        if len(window) == len(frame) and all(map(re.fullmatch, frame, window)):
            at += len(frame)
        else:
            kept.append(statements[at])
            at += 1
    return kept


def allowlist(path: Path = ALLOWLIST) -> list[Allowance]:
    """The allowlist's entries."""
    entries = tomllib.loads(path.read_text(encoding="utf-8"))["allow"]
    return [Allowance(entry["revision"], tuple(entry["rules"]), entry["why"].strip()) for entry in entries]


def pg_version(engine: Engine) -> str:
    """The server's version as squawk takes it (`15.18`)."""
    with engine.connect() as conn:
        number = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
    return f"{number // 10000}.{number % 10000}"
