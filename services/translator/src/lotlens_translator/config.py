"""Settings of the translator."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.config import StageSettings


class TranslatorSettings(ServiceSettings):
    """Service settings plus the batching rule."""

    model_config = SettingsConfigDict(env_prefix="LOTLENS_", env_nested_delimiter="__", frozen=True)

    stage: StageSettings = Field(default_factory=StageSettings)
    metrics_port: int = 0
    group_id: str = "lotlens-translator"
