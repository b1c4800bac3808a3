"""Settings of the vision-batcher."""

from __future__ import annotations

from pydantic import Field

from lotlens_common.images import MAX_IMAGE_BYTES
from lotlens_common.settings import VISION_BATCHER_GROUP, ServiceSettings, settings_config
from lotlens_common.stage.config import StageSettings


class VisionBatcherSettings(ServiceSettings):
    """Service settings plus the batching rule and image checks."""

    model_config = settings_config("LOTLENS_", nested=True)

    stage: StageSettings = Field(default_factory=StageSettings)
    image_check_concurrency: int = 64
    image_check_timeout_s: float = 10.0
    # A client's image host whose tries ran into their own timeout this many times in a row (no
    # connection, no answer, no DNS answer within it; a refused or dropped connection is no such
    # try) is taken as down for `image_host_down_s`: its other images are unreachable without a
    # connection (`lotlens_common/image_hosts.py`); 0 turns it off.
    image_host_down_after: int = Field(default=3, ge=0)
    image_host_down_s: float = Field(default=60.0, gt=0)
    # A chunk of a shard starts no image check after this long but its first lot's (those under
    # way end within their own 30 s): the lots left go back to their job's queue, and the round
    # moves on to the other jobs. At 64 checks at a time, even all dead, 256 images a chunk.
    image_check_budget_s: float = Field(default=120.0, gt=0)
    # The gateway's setting of the same name: a lot's images pass the same limit on either path.
    max_image_bytes: int = MAX_IMAGE_BYTES
    metrics_port: int = 0
    group_id: str = VISION_BATCHER_GROUP

    def subscribed_topics(self) -> list[str]:
        """Its work first: the topic the stage's lots come from (KEDA scales it on its lag there)."""
        return list(self.topics.subscriptions()[VISION_BATCHER_GROUP])
