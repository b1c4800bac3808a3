"""The outbox's gauges on `/metrics`, set by the relay's thread at most once a second, between its
rounds: the backlog, and per topic how far the relay's floor is behind and how long a transaction
has held it there (`outbox_floor`).

A transaction that has its transaction id and stays open, in any database of the PostgreSQL
server, keeps every floor where it was: nothing is lost, but each read walks every row written
since, a round's cost growing with time (an hour at 1,000 rows/s: 3.6 million a read), and the
backlog grows only once that cost outruns the appends, with nothing pointing at the cause.

The hold is timed on the relay's own clock, from the proposal the transaction keeps waiting:
pg_stat_activity hides `xact_start` of another role's sessions from a role without
pg_read_all_stats (the gateway's), and another role's session is the usual culprit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import Engine, Text, cast, func, select
from sqlalchemy.exc import SQLAlchemyError

from lotlens_common.clock import utc_now
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox_floor import Floor

log = logging.getLogger(__name__)
# The oldest transaction running on the server now (`outbox_floor`): read in the backlog's
# statement, no statement more.
_HORIZON = cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text)
# The lowest id kept (the primary key's first entry): below it, rows were pruned and nothing walks them.
_KEPT_FROM = select(func.min(outbox.c.id)).scalar_subquery()


def observe(engine: Engine, topics: Sequence[str], floors: Mapping[str, Floor], metrics: GatewayMetrics,
            now: float) -> None:
    """Set the backlog and floor gauges (also while Kafka is down: that is when they matter);
    `now` on the clock the floors' proposals were made on."""
    unread = Floor()  # a topic not read yet, or not since a round the database failed
    try:
        with engine.connect() as conn:
            # From the lowest floor: every row below it is published. (A relay of no topics,
            # one that only prunes and makes secrets, has none: `min` of nothing killed it.)
            low = min((floors.get(topic, unread).below for topic in topics), default=0)
            count, oldest, horizon, kept_from = conn.execute(
                select(func.count(), func.min(outbox.c.created_at), _HORIZON, _KEPT_FROM)
                .where(outbox.c.topic.in_(topics), outbox.c.id >= low,
                       outbox.c.published_at.is_(None))).one()
    except SQLAlchemyError as exc:
        log.warning("outbox backlog unknown: %s", exc)
        return
    metrics.outbox_backlog.set(count)
    age = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
    metrics.outbox_oldest_age.set(max(age, 0.0))
    for topic in topics:
        floor = floors.get(topic, unread)
        metrics.outbox_floor_lag.labels(topic=topic).set(floor.behind(kept_from or 0))
        metrics.outbox_floor_held.labels(topic=topic).set(floor.held_s(int(horizon), now))
