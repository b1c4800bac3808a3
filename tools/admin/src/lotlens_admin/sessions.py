"""`lotlens-admin`'s PostgreSQL sessions: each waits for a lock at most
`DATABASE_ADMIN_LOCK_TIMEOUT_MS`, and a wait that runs out is one line naming what was locked.

Bounded because psycopg2 in blocking mode acts on Ctrl-C only when the statement returns: a
command queued behind a lock someone left open in psql waited for ever and ignored Ctrl-C."""

from __future__ import annotations

import re

from psycopg2.errors import LockNotAvailable
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings, ServiceSettings

# The relations a statement names, for the one line; a row lock's wait names its own (CONTEXT).
_RELATION = re.compile(r'\b(?:UPDATE|INTO|FROM|JOIN|TABLE)\s+((?:ONLY\s+)?[\w."]+)', re.IGNORECASE)
_ROW_RELATION = re.compile(r'in relation "([^"]+)"')


def admin_engine(pool_size: int | None = None, settings: DatabaseSettings | None = None) -> Engine:
    """An engine whose sessions say they are `lotlens-admin` and wait for each lock a bounded time."""
    database = settings or ServiceSettings().database
    return make_engine(database, "admin", pool_size=pool_size, limits=database.admin_limits())


def lock_refused(exc: OperationalError) -> str | None:
    """The operator's line for a lock wait that ran out; None for any other error."""
    if not isinstance(exc.orig, LockNotAvailable):
        return None
    context = exc.orig.diag.context or ""
    named = _ROW_RELATION.findall(context) or _RELATION.findall(exc.statement or "")
    what = ", ".join(dict.fromkeys(name.removeprefix("ONLY ").strip('"') for name in named)) or "a table"
    waited = DatabaseSettings().admin_lock_timeout_ms / 1000
    return (f"{what} is locked: another session holds it (waited {waited:g} s, "
            "DATABASE_ADMIN_LOCK_TIMEOUT_MS); what was not committed is not done; try again once it "
            "ends (docs/RUNBOOK.md, \"A table held locked\")")
