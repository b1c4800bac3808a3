"""A job's outbox rows of one type are read in `id` order from an index: the lots pages and
`batch-results` of a job the result-store has not projected read its `LotSubmitted` rows ordered
by id, and the planner walked the outbox's primary key from its start past every other job's rows
(7-13 ms a page at 150,000 retained rows), or sorted all of the job's rows. `ix_outbox_job_events`
(job_id, event_type, id) gives them in order; it replaces `ix_outbox_job` (job_id, event_type),
whose every lookup it serves, so the outbox, written 50,000 rows a big job, keeps one index of a
job's rows rather than two.

Built concurrently (`concurrent_indexes`, outside Alembic's transaction, as 0020 and 0023 are):
the outbox keeps an hour of accepted events, millions of rows at peak intake, and a plain CREATE
INDEX would block intake's writes for the whole build. The old index is dropped only once the new
one is built (concurrently too), so a job's rows are never read without one; gateways of the
previous release, still running during a rolling upgrade, are served by the new one as well.
An interrupted build leaves an invalid index under the name, which the next run drops and builds.

Revision ID: 0025_outbox_job_order
Revises: 0024_dispatch_unready_since
"""

from __future__ import annotations

import sqlalchemy as sa

from lotlens_common.migrations import concurrent_indexes

revision = "0025_outbox_job_order"
down_revision = "0024_dispatch_unready_since"

NEW = {"ix_outbox_job_events": ([sa.text("job_id"), sa.text("event_type"), sa.text("id")], None)}
OLD = {"ix_outbox_job": ([sa.text("job_id"), sa.text("event_type")], None)}


def upgrade() -> None:
    """Build the ordered index concurrently, then drop the one it replaces."""
    concurrent_indexes.build("outbox", NEW)
    concurrent_indexes.drop("outbox", OLD)


def downgrade() -> None:
    """Build the old index again concurrently, then drop the ordered one."""
    concurrent_indexes.build("outbox", OLD)
    concurrent_indexes.drop("outbox", NEW)
