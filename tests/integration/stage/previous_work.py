"""The previous release's work models (e20f8a4, `lotlens_common/stage/work.py`), word for word: what
a vision-batcher of that release parses each row it claims or collects with, during a rolling
upgrade or after a rollback; and how it writes a lot's work back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, text

from lotlens_common.model.usage import Usage
from lotlens_common.row_sets import json_rows


class StageWork(BaseModel):
    """What every stage's work carries: the W3C context of its job's trace (empty when tracing is
    off), so the event a batch publishes for the lot, later and in another loop, continues it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trace: dict[str, str] = {}
    earlier_usage: Usage | None = Field(default=None, exclude_if=lambda usage: usage is None)


class VisionWork(StageWork):
    """A lot waiting for its English description: notes, images, the languages asked for."""

    v: Literal[1] = 1
    additional_info: str = ""
    image_urls: tuple[str, ...]
    languages: tuple[str, ...]
    missing_images: tuple[str, ...] = ()
    refused_images: tuple[str, ...] = Field(default=(), exclude_if=lambda refused: not refused)


def save_work(conn: Connection, stage: str, job_id: str, works: Mapping[str, VisionWork]) -> None:
    """The previous release's `save_work` (e20f8a4, `stage/adapters/postgres.py`): its statement word
    for word, which writes `work` alone and leaves `work_ahead` as a newer release wrote it."""
    if not works:
        return
    conn.execute(text("""
        UPDATE stage_lots AS s SET work = v.work
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(lot_id text, work jsonb)
         WHERE s.stage = :stage AND s.job_id = :job_id AND s.lot_id = v.lot_id"""),
        {"stage": stage, "job_id": job_id, "rows": json_rows(
            {"lot_id": lot_id, "work": work} for lot_id, work in works.items())})
