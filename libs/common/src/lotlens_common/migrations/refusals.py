"""A downgrade that would lose what the older schema cannot hold, and nothing else could bring
back, refuses instead: it raises `DowngradeRefused` before changing anything, naming the rows and
what the operator does about them (README, "Stepping the schema back").

Such a revision declares its `REFUSAL` at module level, so that `lotlens-admin db downgrade` can ask
every revision it will step through before it undoes the first one (each revision is undone in a
transaction of its own: one refusing halfway down left the schema in the middle). The downgrade
itself asks again with `enforce()`, holding the tables, which is what decides.

Revisions may import this module, as they do `concurrent_indexes`: it is how to refuse, not what.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op


class DowngradeRefused(Exception):
    """A downgrade stopped before its first change: rows the older schema cannot hold."""


@dataclass(frozen=True)
class Refusal:
    """Rows of `tables` a revision's downgrade cannot take back: `count` counts them; `reason` says
    why and what to do, `{n}` in it becoming the count.

    `count` must read the same on every later schema (the admin command asks it there): no later
    revision drops or renames what it reads.
    """

    tables: tuple[str, ...]
    count: str
    reason: str

    def found(self, conn: sa.Connection) -> str | None:
        """Why the downgrade would refuse on the rows `conn` sees now; None when it would not."""
        rows = conn.execute(sa.text(self.count)).scalar_one()
        return self.reason.format(n=rows) if rows else None

    def enforce(self) -> None:
        """Raise `DowngradeRefused` when `found`, with the tables held until the downgrade commits.

        Locked before counting: counted first, a row committed between the count and the DROP (a
        gateway starting makes its clients' secrets; a submission writes the outbox) was dropped
        with the table. The lock waits as long as the migrations' `lock_timeout`, then gives way
        and is asked again (`LockPatience`), as the DROP or ALTER that follows would anyway.
        """
        bind = op.get_bind()
        bind.execute(sa.text(f"LOCK TABLE {', '.join(self.tables)} IN ACCESS EXCLUSIVE MODE"))
        if (reason := self.found(bind)) is not None:
            raise DowngradeRefused(reason)
