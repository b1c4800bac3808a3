"""Stand-in configuration: one frozen object, read from `STANDIN_*` environment variables by `main()`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_PREFIX = "STANDIN_"


@dataclass(frozen=True)
class StandinConfig:
    """How the stand-in listens, where it keeps files and how long each batch phase lasts."""

    host: str = "127.0.0.1"
    port: int = 18080
    # None: the app makes a fresh temporary directory when it is created (see app._temporary_dir).
    data_dir: Path | None = None
    # Set: files, batches, faults and counters are kept here and reloaded on start (`data_dir` unused).
    state_dir: Path | None = None
    validating_seconds: float = 0.5
    in_progress_seconds: float = 1.0
    finalizing_seconds: float = 0.5
    # OpenAI's one window is 24 h; tests shorten it to see batches expire with partial output.
    completion_window_seconds: float = 24 * 3600.0
    latency_seconds: float = 0.0
    api_key: str | None = None
    # 0 means unlimited, like an organisation without an enqueued-token cap.
    enqueued_token_limit: int = 0


def config_from_env(env: Mapping[str, str]) -> StandinConfig:
    """Build the configuration from `STANDIN_*` variables, defaults for the ones not set."""

    def get(name: str) -> str | None:
        value = env.get(ENV_PREFIX + name)
        return value if value not in (None, "") else None

    defaults = StandinConfig()
    data_dir, state_dir = get("DATA_DIR"), get("STATE_DIR")
    return StandinConfig(
        host=get("HOST") or defaults.host,
        port=int(get("PORT") or defaults.port),
        data_dir=Path(data_dir) if data_dir else None,
        state_dir=Path(state_dir) if state_dir else None,
        validating_seconds=float(get("VALIDATING_SECONDS") or defaults.validating_seconds),
        in_progress_seconds=float(get("IN_PROGRESS_SECONDS") or defaults.in_progress_seconds),
        finalizing_seconds=float(get("FINALIZING_SECONDS") or defaults.finalizing_seconds),
        completion_window_seconds=float(
            get("COMPLETION_WINDOW_SECONDS") or defaults.completion_window_seconds),
        latency_seconds=float(get("LATENCY_SECONDS") or defaults.latency_seconds),
        api_key=get("API_KEY"),
        enqueued_token_limit=int(get("ENQUEUED_TOKEN_LIMIT") or defaults.enqueued_token_limit),
    )
