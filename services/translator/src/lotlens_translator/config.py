"""Settings of the translator."""

from __future__ import annotations

from pydantic import Field

from lotlens_common.settings import TRANSLATOR_GROUP, ServiceSettings, settings_config
from lotlens_common.stage.config import StageSettings


class TranslatorSettings(ServiceSettings):
    """Service settings plus the batching rule."""

    model_config = settings_config("LOTLENS_", nested=True)

    stage: StageSettings = Field(default_factory=StageSettings)
    metrics_port: int = 0
    group_id: str = TRANSLATOR_GROUP

    def subscribed_topics(self) -> list[str]:
        """Its work first: the lots the vision stage described (KEDA scales it on its lag there);
        then the submissions, for cancellations."""
        return list(self.topics.subscriptions()[TRANSLATOR_GROUP])
