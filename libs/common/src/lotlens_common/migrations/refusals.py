"""A downgrade that would lose what the older schema cannot hold, and nothing else could bring
back, refuses instead: it raises `DowngradeRefused` before changing anything, naming the rows and
what the operator does about them (README, "Stepping the schema back").

Revisions may import this module, as they do `concurrent_indexes`: it is how to refuse, not what.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


class DowngradeRefused(Exception):
    """A downgrade stopped before its first change: rows the older schema cannot hold."""


def refuse_while(count: str, reason: str) -> None:
    """Raise `DowngradeRefused` when the `count` query counts any row; `reason` says why, `{n}` in
    it becomes the count."""
    found = op.get_bind().execute(sa.text(count)).scalar_one()
    if found:
        raise DowngradeRefused(reason.format(n=found))
