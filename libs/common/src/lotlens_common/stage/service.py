"""Wiring shared by the two stage services: a consumer for arriving lots, a loop for batches."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import openai
from sqlalchemy import Engine

from lotlens_common import tracing
from lotlens_common.db import make_engine
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.model.openai_client import OpenAIBatches, call_responses, openai_client_for
from lotlens_common.producer import EventProducer
from lotlens_common.service import run_workers, serve_operations, setup_logging, stop_on_signals
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage import metrics
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.adapters.kafka import KafkaPublisher
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.ports import BatchesPort, Stage
from lotlens_common.stage.runner import run_stage_loop
from lotlens_common.stage.work import StageSpec

# The service running each stage (its `service.name` in traces).
SERVICE_NAMES = {"vision": "vision-batcher", "translation": "translator"}

# (engine, producer for pass-through events, consumer batch) -> None
IntakeHandler = Callable[[Engine, EventProducer, Sequence[Envelope]], None]


def postgres_stage(engine: Engine, producer: EventProducer, batches: BatchesPort, spec: StageSpec[Any],
                   settings: StageSettings) -> Stage[Any]:
    """A stage on PostgreSQL and Kafka, with the given batches API."""
    return Stage(spec, PostgresWorkStore(engine, spec.name, spec.work_type), batches,
                 KafkaPublisher(producer, spec.output_topic()), settings)


def batches_api(client: openai.AsyncOpenAI, direct: bool, stage: StageSettings) -> BatchesPort:
    """OpenAI's Batch API, or direct mode's local stand-in for it."""
    if not direct:
        return OpenAIBatches(client)
    folder = Path(stage.work_dir or tempfile.gettempdir())
    return DirectBatches(partial(call_responses, client), stage.direct_concurrency, folder)


def serve_stage(settings: ServiceSettings, stage: StageSettings, group_id: str, topics: list[str],
                spec: StageSpec[Any], intake: IntakeHandler, metrics_port: int,
                intake_types: frozenset[str] | None = None) -> None:
    """Run a stage service until SIGTERM: intake consumer and batch loop, each in its thread.

    `intake_types`: the event types `intake` acts on; the consumer passes over the others unread.
    """
    setup_logging(settings.log_level)
    tracing.setup(SERVICE_NAMES[spec.name])
    stop = stop_on_signals()
    engine = make_engine(settings.database, SERVICE_NAMES[spec.name],
                         limits=settings.database.worker_limits())
    client: openai.AsyncOpenAI = openai_client_for(settings.openai,
                                                   on_answer=partial(metrics.answered, spec.name))
    direct = settings.openai.mode == "direct"
    stage = stage.direct_mode() if direct else stage
    batches = batches_api(client, direct, stage)
    runner = postgres_stage(engine, EventProducer(settings.kafka, f"{spec.name}-stage"), batches,
                            spec, stage)
    intake_producer = EventProducer(settings.kafka, f"{spec.name}-intake")
    serve_operations(settings, metrics_port, engine, intake_producer)
    consumer = ConsumerSpec(group_id=group_id, topics=topics,
                            handler=partial(intake, engine, intake_producer), event_types=intake_types)

    def consume(stop_event: threading.Event) -> None:
        run_consumer(settings.kafka, settings.topics, consumer, intake_producer, stop_event)

    try:
        run_workers({"intake": consume, "batches": partial(run_stage_loop, runner)}, stop)
    finally:
        engine.dispose()
