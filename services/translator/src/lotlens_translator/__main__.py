"""`lotlens-translator`: wiring only."""

from __future__ import annotations

import threading
from functools import partial

import sqlalchemy.exc

from lotlens_common.db import make_engine
from lotlens_common.kafka import ConsumerSpec, EventProducer, PublishError, run_consumer
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.service import run_workers, serve_metrics, setup_logging, stop_on_signals
from lotlens_common.stage.runner import run_stage_loop
from lotlens_common.stage.runtime import StageRuntime
from lotlens_translator.config import TranslatorSettings
from lotlens_translator.handlers import handle
from lotlens_translator.translation_stage import TranslationStage

TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, PublishError)


def main() -> None:
    """Consume described lots and run the translation batches until SIGTERM."""
    settings = TranslatorSettings()
    setup_logging(settings.log_level)
    serve_metrics(settings.metrics_port)
    stop = stop_on_signals()
    engine = make_engine(settings.database)
    openai = make_openai_client(settings.openai.api_key, settings.openai.base_url,
                                settings.openai.timeout_s)
    runtime = StageRuntime(
        engine=engine, producer=EventProducer(settings.kafka, "translator-stage"),
        batches=OpenAIBatches(openai),
        spec=TranslationStage(settings.topics.translation, settings.models),
        settings=settings.stage)
    intake_producer = EventProducer(settings.kafka, "translator-intake")
    consumer = ConsumerSpec(
        group_id=settings.group_id,
        topics=[settings.topics.vision, settings.topics.submissions],
        handler=partial(handle, engine, intake_producer, settings.topics.translation),
        transient=TRANSIENT)

    def consume(stop_event: threading.Event) -> None:
        run_consumer(settings.kafka, settings.topics, consumer, intake_producer, stop_event)

    try:
        run_workers({"intake": consume, "batches": partial(run_stage_loop, runtime)}, stop)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
