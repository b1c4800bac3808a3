"""Carrying out an operator's release of a shard whose batch cannot be read.

A key that sees none of our batches (another OpenAI project's, or the old project deleted) keeps
the stage paused for good: whether the batch still runs, and will be paid, cannot be known from
here, so only an operator can decide. `lotlens-admin shards release` records the decision on
the shard's row; the stage carries it out at its next look at the shard, before reading the batch,
under the shard's lock, and settles its lots as a lost batch's are (events first, then the rows,
then the shard closed): a crash anywhere leaves the shard submitted with its decision, and the
next round carries it out again (the events keep their ids, so nothing is counted twice).
"""

from __future__ import annotations

import logging
from typing import Any

from lotlens_common.stage.core.lifecycle import RELEASED, RESEND
from lotlens_common.stage.core.outcomes import Kind
from lotlens_common.stage.ports import Shard, Stage
from lotlens_common.stage.settle import Settler

log = logging.getLogger(__name__)


def lot_reason(decision: str, batch_id: str | None) -> str:
    """What a released shard's lots are told (their last error; the reason a failed lot's client
    reads). The operator's own words stay on the shard's row: they are not the client's."""
    verdict = "sent again" if decision == RESEND else "failed"
    return f"OpenAI batch {batch_id} could not be read; {verdict} by an operator's decision"


async def carry_out(stage: Stage[Any], shard: Shard, cancelled: bool) -> str | None:
    """Settle the lots of a released shard and close it; its batch status (None: another instance
    holds the shard, or carried the release out since it was listed).

    Resent lots go back to waiting as a lost batch's do (the send counts as an attempt: OpenAI
    may have run it; at `max_attempts` the lot fails); failed ones fail with the reason.
    """
    with stage.store.exclusive(shard.shard_id) as mine:
        current = stage.store.shard(shard.shard_id) if mine else None
        if current is None or current.status != "submitted" or current.release is None:
            return None
        kind = Kind.TRANSIENT if current.release == RESEND else Kind.PERMANENT
        reason = lot_reason(current.release, current.batch_id)
        settler = Settler(stage, current, cancelled)
        for lot in stage.store.shard_lots(shard.shard_id, stage.sent.pop(shard.shard_id, None)):
            settler.failed(lot, kind, reason)
            settler.flush_if_full()
        settler.flush(RELEASED)
    # The pause it held ends with it (it lasted until the process restarted otherwise).
    stage.unreadable.pop(shard.shard_id, None)
    log.warning("shard %s released by an operator (%s): its batch %s is no longer waited on",
                shard.shard_id, current.release, shard.batch_id,
                extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
    return RELEASED
