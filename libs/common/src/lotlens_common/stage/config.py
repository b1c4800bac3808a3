"""Settings of a batch stage (sizes, windows, retries, token budget)."""

from __future__ import annotations

from typing import Self

from pydantic import Field
from pydantic_settings import BaseSettings

from lotlens_common.settings import settings_config
from lotlens_common.stage.core.limits import (
    BATCH_FILE_MARGIN_BYTES,
    COMPLETION_WINDOW_S,
    MAX_BATCH_FILE_BYTES,
    MAX_REQUESTS_PER_BATCH,
)

# Direct mode: a shard is at most this many rounds of `direct_concurrency` requests (about ten
# model calls' time, under 5 minutes even for 30 s vision calls).
DIRECT_ROUNDS_PER_SHARD = 10


class StageSettings(BaseSettings):
    """How lots are grouped into OpenAI batches and how batches are watched."""

    model_config = settings_config("LOTLENS_STAGE_")

    max_requests_per_batch: int = Field(MAX_REQUESTS_PER_BATCH, ge=1, le=MAX_REQUESTS_PER_BATCH)
    max_batch_bytes: int = Field(MAX_BATCH_FILE_BYTES - BATCH_FILE_MARGIN_BYTES, ge=1,
                                 le=MAX_BATCH_FILE_BYTES)
    # A job's lots wait at most this long for more lots before a partial batch is sent.
    window_s: float = 30.0
    poll_interval_s: float = 10.0
    # A batch still running after this long is cancelled (its finished lines kept, the rest sent
    # again): OpenAI's completion window is 24 h, so this is just past it.
    max_batch_age_s: float = COMPLETION_WINDOW_S + 15 * 60.0
    # A finished batch whose counts say lines were answered but whose output file is not shown or
    # answers 404 is waited for this long after it finished (OpenAI has shown `completed` before
    # the output, BerriAI/litellm#37713); then the file is taken as gone and its lots go again.
    output_wait_s: float = Field(30 * 60.0, ge=0)
    # Per-lot resubmissions after error lines, expiry or cancellation of a batch.
    max_attempts: int = 3
    # Enqueued-token budget across submitted batches: unset = the model's conservative default
    # (`core/limits.py`), 0 = none. Raise it to your organisation's tier.
    enqueued_token_limit: int | None = Field(None, ge=0)
    # Direct mode (no Batch API): requests in flight at once per stage instance.
    direct_concurrency: int = 16
    # Where JSONL files are written before upload ("" = the system's temp folder).
    work_dir: str = ""
    # Finished jobs' work rows are deleted this long after their last lot settled (results stay
    # in the read models). A row is what makes a replayed event a no-op; the record topics are
    # kept for good, so replays older than this rely on the group's committed offsets, which the
    # brokers keep for years (`offsets.retention.minutes`, docs/EVENT_LOG.md). At least two days:
    # a cancelled job's row must outlive its batches' last results (24 h window + 1 h to cancel),
    # or a result arriving after the prune made a new, uncancelled row and was translated, paid.
    retention_h: float = Field(15 * 24.0, ge=48.0)

    def direct_mode(self) -> Self:
        """These settings for direct mode, whose shards are capped at `DIRECT_ROUNDS_PER_SHARD`
        requests per slot.

        A direct "batch" is sent request by request while the stage loop waits, and its answers
        live in memory until the last one: a 50,000-lot shard took hours, outlasted the liveness
        probe (600 s), and each restart sent the whole shard again, paid again, for good.
        """
        cap = self.direct_concurrency * DIRECT_ROUNDS_PER_SHARD
        return self.model_copy(update={"max_requests_per_batch": min(self.max_requests_per_batch, cap)})

