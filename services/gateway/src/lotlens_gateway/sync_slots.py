"""Synchronous lots one process describes at once, per client and in all (places.py).

Nothing bounded them: a burst of synchronous lots, from one client or many, went to OpenAI all
at once, and past the organisation's rate limit every one of them waited out its retries to
fail together, or its client's timeout came first. A lot past the places is refused at once,
before it is counted against its client's rate limit (a 429 of its own doing used one up, and a
client retrying had none left), and before any image is checked or model called.
"""

from __future__ import annotations

from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.places import Places

# A place frees up when any lot ends, most within seconds to a minute.
RETRY_AFTER_S = 5


class SyncSlots(Places):
    """Places of synchronous lots in one process (its event loop)."""

    def __init__(self, per_process: int, per_client: int, metrics: GatewayMetrics) -> None:
        super().__init__(per_process, per_client, metrics.sync_lots, metrics.sync_refused)

    def _too_many(self) -> ApiError:
        return ApiError(
            429, "RATE_LIMIT_EXCEEDED",
            f"At most {self._per_client} synchronous lots of a client are described at once; "
            f"retry in {RETRY_AFTER_S} s, or when one of them has been answered",
            details={"reason": "concurrent_synchronous_lots", "concurrent_synchronous_lots": self._per_client,
                     "retry_after": RETRY_AFTER_S},
            headers={"Retry-After": str(RETRY_AFTER_S)})

    def _busy(self) -> ApiError:
        return ApiError(
            503, "SYNCHRONOUS_BUSY",
            f"The gateway is describing {self._in_flight} other synchronous lots; retry in {RETRY_AFTER_S} s",
            details={"synchronous_lots_in_progress": self._in_flight, "retry_after": RETRY_AFTER_S},
            headers={"Retry-After": str(RETRY_AFTER_S)})
