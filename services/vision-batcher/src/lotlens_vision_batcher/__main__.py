"""`lotlens-vision-batcher`: wiring only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

import httpx
import sqlalchemy.exc

from lotlens_common.db import make_engine
from lotlens_common.images import check_images
from lotlens_common.kafka import ConsumerSpec, EventProducer, PublishError, run_consumer
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.service import run_workers, serve_metrics, setup_logging, stop_on_signals
from lotlens_common.stage.runner import run_stage_loop
from lotlens_common.stage.runtime import StageRuntime
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_vision_batcher.handlers import handle
from lotlens_vision_batcher.vision_stage import VisionStage

TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, PublishError)


def main() -> None:
    """Consume submitted lots and run the vision batches until SIGTERM."""
    settings = VisionBatcherSettings()
    setup_logging(settings.log_level)
    serve_metrics(settings.metrics_port)
    stop = stop_on_signals()
    engine = make_engine(settings.database)
    http = httpx.AsyncClient(timeout=settings.image_check_timeout_s, follow_redirects=False)

    async def checker(urls: Sequence[str]) -> tuple[list[str], list[str]]:
        result = await check_images(urls, http, settings.allow_loopback_urls,
                                    settings.image_check_concurrency)
        return list(result.valid), list(result.unreachable)

    openai = make_openai_client(settings.openai.api_key, settings.openai.base_url,
                                settings.openai.timeout_s)
    runtime = StageRuntime(
        engine=engine, producer=EventProducer(settings.kafka, "vision-batcher-stage"),
        batches=OpenAIBatches(openai),
        spec=VisionStage(settings.topics.vision, settings.models, checker),
        settings=settings.stage)
    consumer = ConsumerSpec(group_id=settings.group_id, topics=[settings.topics.submissions],
                            handler=partial(handle, engine), transient=TRANSIENT)
    intake_producer = EventProducer(settings.kafka, "vision-batcher-intake")

    def consume(stop_event: threading.Event) -> None:
        run_consumer(settings.kafka, settings.topics, consumer, intake_producer, stop_event)

    try:
        run_workers({"intake": consume, "batches": partial(run_stage_loop, runtime)}, stop)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
