"""`lotlens-vision-batcher`: wiring only."""

from __future__ import annotations

from collections.abc import Sequence

from lotlens_common.images import ImageCheck, check_images
from lotlens_common.stage.service import serve_stage
from lotlens_common.urls import guarded_async_client
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_vision_batcher.handlers import HANDLED, handle
from lotlens_vision_batcher.vision_stage import VisionStage


def main() -> None:
    """Consume submitted lots and run the vision batches until SIGTERM."""
    settings = VisionBatcherSettings()
    # Connects only to the address it checked, so DNS cannot change between check and fetch.
    http = guarded_async_client(settings.allow_loopback_urls, settings.image_check_timeout_s,
                                max_connections=settings.image_check_concurrency)

    async def checker(urls: Sequence[str]) -> ImageCheck:
        return await check_images(urls, http, settings.allow_loopback_urls, settings.image_check_concurrency)

    serve_stage(settings, settings.stage, settings.group_id, [settings.topics.submissions],
                VisionStage(settings.topics.vision, settings.models, checker,
                            billed_share=settings.billed_share()), handle,
                settings.metrics_port, HANDLED)


if __name__ == "__main__":
    main()
