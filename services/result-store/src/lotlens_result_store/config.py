"""Settings of the result-store."""

from __future__ import annotations

from pydantic import Field

from lotlens_common.ops import STALE_AFTER_S
from lotlens_common.settings import RESULT_STORE_GROUP, ServiceSettings, settings_config


class ResultStoreSettings(ServiceSettings):
    """Service settings plus the consumer group and the metrics port."""

    model_config = settings_config("LOTLENS_", nested=True)

    metrics_port: int = 0
    group_id: str = RESULT_STORE_GROUP
    # How often it looks whether a rebuild swapped the read models (then it announces the jobs
    # they hold finished): one catalogue lookup. Each look beats `/livez`, and a round can itself
    # take a while (an outage's timeouts): at most half the staleness, so a slow round is no death.
    swap_check_s: float = Field(5.0, gt=0, le=STALE_AFTER_S / 2)

    def subscribed_topics(self) -> list[str]:
        """Every record topic: it acts on each of them (KEDA sums its lag over them all)."""
        return list(self.topics.subscriptions()[RESULT_STORE_GROUP])
