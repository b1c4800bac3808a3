"""Synchronous lots one process describes at once, per client and in all (places.py).

Nothing bounded them: a burst of synchronous lots, from one client or many, went to OpenAI all
at once, and past the organisation's rate limit every one of them waited out its retries to
fail together, or its client's timeout came first. A lot past the places is refused at once,
before it is counted against its client's rate limit (a 429 of its own doing used one up, and a
client retrying had none left), and before any image is checked or model called.
"""

from __future__ import annotations

from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.places import Places, Refusals

REFUSALS = Refusals(
    reason="concurrent_synchronous_lots",
    too_many=("At most {limit} synchronous lots of a client are described at once; "
              "retry in {retry} s, or when one of them has been answered"),
    busy_code="SYNCHRONOUS_BUSY",
    busy="The gateway is describing {count} other synchronous lots; retry in {retry} s",
    in_progress="synchronous_lots_in_progress")


def sync_slots(per_process: int, per_client: int, metrics: GatewayMetrics) -> Places:
    """Places of synchronous lots in one process (its event loop)."""
    return Places(per_process, per_client, metrics.sync_lots, metrics.sync_refused, REFUSALS)
