"""`stage_lots` pages filled to half, so a lot settled done is rewritten on its own page.

A lot's row is written twice: COPYed on arrival, updated when its outcome is settled. With full
pages, the update's new row version went to another page, and a new entry into both indexes
with it: for a 50,000-lot shard, 0.9-1.3 s of the database's CPU a stage, most of what the stage
asked of it. With room on the page for one more version of each row, the update is HOT (no
index touched) and takes 0.34-0.42 s; the old version is pruned from the page as it is read. The
table of lots not settled yet is about twice as large (it was once they were: each update left
a dead row version behind on the full page it came from).

Only pages written from now on are filled to half; the rows already there stay where they are.
No row is rewritten and the table is not locked against reads or writes.

Downgrade: full pages again for what is written next (lots then settle as before).

Revision ID: 0036_stage_lots_fillfactor
Revises: 0035_stage_queue_hold
"""

from __future__ import annotations

from alembic import op

revision = "0036_stage_lots_fillfactor"
down_revision = "0035_stage_queue_hold"


def upgrade() -> None:
    """Fill `stage_lots` pages to half."""
    op.execute("ALTER TABLE stage_lots SET (fillfactor = 50)")


def downgrade() -> None:
    """Fill them whole (the default)."""
    op.execute("ALTER TABLE stage_lots RESET (fillfactor)")
