"""Wiring shared by the two stage services: a consumer for arriving lots, a loop for batches."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial

import openai
import sqlalchemy.exc
from sqlalchemy import Engine

from lotlens_common.db import make_engine
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec, EventProducer, PublishError, run_consumer
from lotlens_common.model.openai_client import OpenAIBatches, call_responses, make_openai_client
from lotlens_common.service import run_workers, serve_operations, setup_logging, stop_on_signals
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.runner import run_stage_loop
from lotlens_common.stage.runtime import StageRuntime
from lotlens_common.stage.spec import StageSpec

TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, PublishError)

# (engine, producer for pass-through events, consumer batch) -> None
IntakeHandler = Callable[[Engine, EventProducer, Sequence[Envelope]], None]


def serve_stage(settings: ServiceSettings, stage: StageSettings, group_id: str, topics: list[str],
                spec: StageSpec, intake: IntakeHandler, metrics_port: int) -> None:
    """Run a stage service until SIGTERM: intake consumer and batch loop, each in its thread."""
    setup_logging(settings.log_level)
    stop = stop_on_signals()
    engine = make_engine(settings.database)
    client: openai.AsyncOpenAI = make_openai_client(
        settings.openai.api_key, settings.openai.base_url, settings.openai.timeout_s)
    direct = partial(call_responses, client) if settings.openai.mode == "direct" else None
    runtime = StageRuntime(engine=engine, producer=EventProducer(settings.kafka, f"{spec.name}-stage"),
                           batches=OpenAIBatches(client), spec=spec, settings=stage, direct=direct)
    intake_producer = EventProducer(settings.kafka, f"{spec.name}-intake")
    serve_operations(settings, metrics_port, engine, intake_producer)
    consumer = ConsumerSpec(group_id=group_id, topics=topics,
                            handler=partial(intake, engine, intake_producer), transient=TRANSIENT)

    def consume(stop_event: threading.Event) -> None:
        run_consumer(settings.kafka, settings.topics, consumer, intake_producer, stop_event)

    try:
        run_workers({"intake": consume, "batches": partial(run_stage_loop, runtime)}, stop)
    finally:
        engine.dispose()
