"""A lot whose images the vision model cannot hold in one request (its context window: o4-mini
200,000 tokens; 500 images is OpenAI's cap per request, far more than fit) fails before any
request, its reason naming the limit; against the stand-in, real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, LotSubmitted, VisionCompleted
from lotlens_common.images import ImageCheck
from lotlens_common.settings import ServiceSettings
from lotlens_vision_batcher import handlers as vision_handlers
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.conftest import new_id
from tests.integration.stage.helpers import drive, job_events
from tests.standin import Standin

pytestmark = pytest.mark.integration


async def small_photos(urls: Sequence[str]) -> ImageCheck:
    """Every image reachable, 200 kB each: 100 of them are well within OpenAI's 50 MB a request."""
    return ImageCheck(valid=tuple(urls), unreachable=(), sizes={url: 200_000 for url in urls})


def test_a_lot_with_more_images_than_the_context_window_holds_fails_without_a_request(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    many = tuple(f"https://img.test/{job_id}/{k}.jpg" for k in range(100))
    vision_handlers.handle(engine, None, [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id=f"lot-{i}", seq=i, total_lots=2, additional_info="Camry",
        image_urls=many if i == 0 else many[:3], languages=("en",))) for i in range(2)])
    spec = VisionStage(settings.topics.vision, settings.models, small_photos)
    asyncio.run(drive(settings, engine, standin, spec, job_id))

    events = [e.event for e in job_events(settings, settings.topics.vision, job_id, 2)]
    [failed] = [e for e in events if isinstance(e, LotFailed)]
    assert failed.lot_id == "lot-0"
    assert failed.reason == (
        "the lot's 100 images need more than the vision model's context window holds (about 264,800 "
        "input tokens and 4,000 for the answer, past 200,000): at most 73 images of a lot fit")
    assert [e.lot_id for e in events if isinstance(e, VisionCompleted)] == ["lot-1"]
    # Only the other lot was sent: nothing the model had to refuse.
    [batch] = standin.control.get("/v1/batches").json()["data"]
    assert batch["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
