"""The previous release's work models (e20f8a4, `lotlens_common/stage/work.py`), word for word: what
a vision-batcher of that release parses each row it claims or collects with, during a rolling
upgrade or after a rollback."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lotlens_common.model.usage import Usage


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
