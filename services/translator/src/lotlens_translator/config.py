"""Settings of the translator."""

from __future__ import annotations

from pydantic import Field

from lotlens_common.settings import ServiceSettings, settings_config
from lotlens_common.stage.config import StageSettings


class TranslatorSettings(ServiceSettings):
    """Service settings plus the batching rule."""

    model_config = settings_config("LOTLENS_", nested=True)

    stage: StageSettings = Field(default_factory=StageSettings)
    metrics_port: int = 0
    group_id: str = "lotlens-translator"

    def work_topic(self) -> str:
        """The topic the stage's lots come from (described by the vision stage); its group's lag
        there is what KEDA scales it on. The group also reads the submissions, for cancellations."""
        return self.topics.vision
