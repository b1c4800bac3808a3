"""Settings of a batch stage (sizes, windows, retries, token budget)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

# OpenAI's hard limits for one batch input file.
OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024


class StageSettings(BaseSettings):
    """How lots are grouped into OpenAI batches and how batches are watched."""

    model_config = SettingsConfigDict(env_prefix="LOTLENS_STAGE_", frozen=True)

    max_requests_per_batch: int = OPENAI_MAX_REQUESTS
    # A margin under 200 MB: the limit is measured on the bytes written.
    max_batch_bytes: int = OPENAI_MAX_FILE_BYTES - 1024 * 1024
    # A job's lots wait at most this long for more lots before a partial batch is sent.
    window_s: float = 30.0
    poll_interval_s: float = 10.0
    # Per-lot resubmissions after error lines, expiry or cancellation of a batch.
    max_attempts: int = 3
    # Enqueued-token budget per model across submitted batches (0 = unlimited).
    enqueued_token_limit: int = 0
    # Direct mode (no Batch API): requests in flight at once per stage instance.
    direct_concurrency: int = 16
    # Where JSONL files are written before upload ("" = the system's temp folder).
    work_dir: str = ""
    # Finished jobs' work rows are deleted this long after their last lot settled (results stay
    # in the read models). A row is what makes a replayed event a no-op; the record topics are
    # kept for good, so replays older than this rely on the group's committed offsets, which the
    # brokers keep for years (`offsets.retention.minutes`, docs/EVENT_LOG.md).
    retention_h: float = 15 * 24.0
