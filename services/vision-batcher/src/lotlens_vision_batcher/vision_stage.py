"""The vision stage: lots with image URLs in, English HTML descriptions out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lotlens_common.events import Event, LotFailed, VisionBatchSubmitted, VisionCompleted
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.vision import parse_vision_response, vision_request_body
from lotlens_common.stage.spec import LotWork, Prepared

# (urls) -> (reachable urls, unreachable urls), in the order given.
ImageChecker = Callable[[Sequence[str]], Awaitable[tuple[list[str], list[str]]]]

# OpenAI's image token cost: a fixed 85 at low detail, up to ~765 for a 1024px tile set otherwise.
_IMAGE_TOKENS = {"low": 85, "high": 765, "auto": 765}
_PROMPT_TOKENS = 600


@dataclass(frozen=True)
class VisionStage:
    """Builds vision requests from reachable images and reads the English description back."""

    topic: str
    models: ModelSettings
    check_images: ImageChecker
    name: str = "vision"

    def output_topic(self) -> str:
        """The vision topic."""
        return self.topic

    def model(self) -> str:
        """The vision model."""
        return self.models.vision_model

    def estimate_tokens(self, lot: LotWork) -> int:
        """Input tokens: the images at the configured detail plus instructions and notes."""
        images = len(lot.work.get("valid_images") or lot.work["image_urls"])
        notes = len(lot.work.get("additional_info", "")) // 4
        return images * _IMAGE_TOKENS[self.models.image_detail] + _PROMPT_TOKENS + notes

    async def prepare(self, lots: list[LotWork]) -> Prepared:
        """Check every image first: a lot with none reachable fails here and costs no model call.

        All the shard's URLs go to the checker at once, so its concurrency bound applies to the
        whole shard rather than to one lot at a time.
        """
        every_url = list(dict.fromkeys(url for lot in lots for url in lot.work["image_urls"]))
        reachable = set((await self.check_images(every_url))[0])
        requests: list[tuple[LotWork, dict[str, Any]]] = []
        settled: list[tuple[LotWork, Event]] = []
        for lot in lots:
            valid = [url for url in lot.work["image_urls"] if url in reachable]
            missing = [url for url in lot.work["image_urls"] if url not in reachable]
            checked = lot.with_work(valid_images=valid, missing_images=missing)
            if not valid:
                reason = f"none of the lot's {len(missing)} images could be fetched"
                settled.append((checked, self.failure_event(checked, reason)))
                continue
            body = vision_request_body(lot.work.get("additional_info", ""), valid, self.models)
            requests.append((checked, body))
        return Prepared(requests, settled)

    def result_event(self, lot: LotWork, body: Mapping[str, Any]) -> Event:
        """VisionCompleted with the parsed HTML."""
        return VisionCompleted(
            job_id=lot.job_id, lot_id=lot.lot_id, english_html=parse_vision_response(body),
            languages=tuple(lot.work["languages"]), total_lots=lot.total_lots,
            processed_images=len(lot.work.get("valid_images") or ()),
            missing_images=tuple(lot.work.get("missing_images") or ()))

    def failure_event(self, lot: LotWork, reason: str) -> Event:
        """LotFailed at the vision stage."""
        return LotFailed(job_id=lot.job_id, lot_id=lot.lot_id, stage="vision", reason=reason,
                         total_lots=lot.total_lots,
                         missing_images=tuple(lot.work.get("missing_images") or ()))

    def batch_submitted_event(self, job_id: str, shard_id: str, attempt: int, batch_id: str,
                              lot_ids: tuple[str, ...]) -> Event:
        """VisionBatchSubmitted."""
        return VisionBatchSubmitted(job_id=job_id, shard_id=shard_id, attempt=attempt,
                                    batch_id=batch_id, lot_ids=lot_ids)
