"""Settings of the result-store."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from lotlens_common.settings import ServiceSettings


class ResultStoreSettings(ServiceSettings):
    """Service settings plus the consumer group and the metrics port."""

    model_config = SettingsConfigDict(env_prefix="LOTLENS_", env_nested_delimiter="__", frozen=True)

    metrics_port: int = 0
    group_id: str = "lotlens-result-store"
