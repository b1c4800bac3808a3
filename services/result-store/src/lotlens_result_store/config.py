"""Settings of the result-store."""

from __future__ import annotations

from lotlens_common.settings import ServiceSettings, settings_config


class ResultStoreSettings(ServiceSettings):
    """Service settings plus the consumer group and the metrics port."""

    model_config = settings_config("LOTLENS_", nested=True)

    metrics_port: int = 0
    group_id: str = "lotlens-result-store"
    # How often it looks whether a rebuild swapped the read models (then it announces the jobs
    # they hold finished): one catalogue lookup.
    swap_check_s: float = 5.0
