"""`lots` pages keep room for the two updates each lot gets, so they are HOT (heap-only tuples).

The result-store COPYs a lot in (`LotSubmitted`), then updates it twice: its vision result
(images, usage) and its translation (status, `processed_at`, usage). None of those columns is in
an index, so an update can be HOT, writing no index entry, but only if the new row version fits
on the old one's page. COPY filled each page, so 99% of the updates went to another page and
wrote an entry in each of the table's indexes. A page filled to 25% keeps room for both, even
while an open snapshot keeps the first update's old version from being pruned: the
measurements, and why 25, are in docs/TABLES.md, "Storage parameters".

`SET (fillfactor)` takes a SHARE UPDATE EXCLUSIVE lock (reads and writes go on) and rewrites no
row: pages written from now on are filled to 25%; those there keep their rows (lots of finished
jobs, which are not updated again).

Downgrade: back to PostgreSQL's default (100); nothing is lost.

Revision ID: 0037_lots_fillfactor
Revises: 0036_stage_lots_fillfactor
"""

from __future__ import annotations

from alembic import op

revision = "0037_lots_fillfactor"
down_revision = "0036_stage_lots_fillfactor"


def upgrade() -> None:
    """Fill `lots` pages to 25%."""
    op.execute("ALTER TABLE lots SET (fillfactor = 25)")


def downgrade() -> None:
    """Fill them whole again."""
    op.execute("ALTER TABLE lots RESET (fillfactor)")
