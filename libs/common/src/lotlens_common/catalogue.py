"""The event catalogue as an AsyncAPI 3.0 document, generated from the event models themselves.

`python -m lotlens_common.catalogue > docs/asyncapi.json` refreshes the committed copy; a test
fails when the copy and the models drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import DEFAULT_REF_TEMPLATE

from lotlens_common.dead_letters import REPLAY_GROUP
from lotlens_common.envelope import CLOUDEVENTS_SPECVERSION, CONTENT_TYPE, cloudevent_type, dataschema
from lotlens_common.events import (
    EVENT_TYPES,
    Event,
    JobCancelled,
    JobCompleted,
    JobSubmitted,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
    WebhookAttempted,
    WebhookDelivered,
    WebhookFailed,
    WebhookRedeliveryRequested,
)
from lotlens_common.settings import TopicSettings

# topic setting -> (who publishes, the events on it)
CHANNELS: dict[str, tuple[str, tuple[type[Any], ...]]] = {
    "submissions": ("gateway", (JobSubmitted, LotSubmitted, JobCancelled)),
    "vision": ("vision-batcher", (VisionBatchSubmitted, VisionCompleted, LotFailed)),
    "translation": ("translator", (TranslationBatchSubmitted, TranslationCompleted, LotFailed)),
    "completions": ("result-store, gateway", (JobCompleted, WebhookRedeliveryRequested)),
    "webhooks": ("webhook-dispatcher", (WebhookAttempted, WebhookDelivered, WebhookFailed)),
}

# The public contract: the event types downstream systems may build on, and the topics they are on.
# Everything else (batch bookkeeping, webhook records, redelivery requests) is internal and may
# change without notice; subscribers ignore the types they do not know.
PUBLIC_EVENTS: tuple[type[Event], ...] = (JobSubmitted, LotSubmitted, JobCancelled, LotFailed,
                                          TranslationCompleted, JobCompleted)
PUBLIC_CHANNELS: frozenset[str] = frozenset({"submissions", "vision", "translation", "completions"})

RULES = (
    "Every event is a JSON envelope around a versioned `data` payload, with the CloudEvents Kafka "
    "binding headers (binary mode). Public topics and event types are tagged `public`; the others "
    "are internal. The message key is the job id: one job's events on one topic are in order "
    "(but for replayed copies, below). "
    "Delivery is at least once, and a copy carries its original's id: deduplicate by `event_id` "
    "(= `ce_id`). The record topics are kept for good. Subscribers must ignore unknown fields and "
    "unknown event types and versions. "
    f"A message with the header `{REPLAY_GROUP}` is a copy of an event already on the topic that "
    "an operator sent back to one LotLens consumer group after it failed there (a replayed dead "
    "letter): it arrives after the job's later events, with the original's `event_id`; every "
    "other subscriber skips it (deduplicating by `event_id` does too). "
    "JSON Schemas of the public events: docs/events/schemas/<type>/v<version>.json."
)

ENVELOPE_FIELDS = {
    "event_id": {"type": "string", "format": "uuid"},
    "type": {"type": "string", "description": "The event type, e.g. `LotSubmitted`"},
    "version": {"type": "integer", "description": "Schema version of `data` (older versions are upcast)"},
    "occurred_at": {"type": "string", "format": "date-time"},
    "job_id": {"type": "string", "description": "Also the Kafka message key: a job's events stay in order"},
    "client_id": {"type": "string"},
    "trace": {"type": "object", "additionalProperties": {"type": "string"}},
}


def _visibility(public: bool) -> list[dict[str, str]]:
    return [{"name": "public" if public else "internal"}]


def _headers(event: type[Any]) -> dict[str, Any]:
    def const(value: str) -> dict[str, str]:
        return {"type": "string", "const": value}

    return {"type": "object", "properties": {
        "type": const(event.event_type),
        "ce_specversion": const(CLOUDEVENTS_SPECVERSION),
        "ce_id": {"type": "string", "description": "= the envelope's `event_id`"},
        "ce_source": {"type": "string", "description": "/lotlens/<producing component>"},
        "ce_type": const(cloudevent_type(event.event_type)),
        "ce_time": {"type": "string", "format": "date-time", "description": "= `occurred_at`"},
        "ce_subject": {"type": "string", "description": "= the job id"},
        "ce_dataschema": const(dataschema(event.event_type, event.version)),
        "content-type": const(CONTENT_TYPE),
        # Not on every message: the W3C trace context when tracing is on, and the replay's addressee.
        "traceparent": {"type": "string", "description": "W3C trace context of the job's trace, when "
                        "LotLens traces (OpenTelemetry); also in the envelope's `trace`"},
        "tracestate": {"type": "string", "description": "W3C trace state, with `traceparent`, when set"},
        REPLAY_GROUP: {"type": "string", "description": "Only on a replayed dead letter: the LotLens "
                       "consumer group the copy is for. It repeats an earlier event (same `event_id`) "
                       "and arrives after the job's later events: every other subscriber skips it"},
    }}


def open_schema(event: type[Event], ref_template: str = DEFAULT_REF_TEMPLATE) -> dict[str, Any]:
    """The JSON Schema of an event's `data` as subscribers should read it: what the model validates,
    with an open content model (subscribers ignore fields a later release adds to the version).
    The one source of the released schemas (`event_schemas`) and of this document's payloads."""
    schema = event.model_json_schema(mode="validation", ref_template=ref_template)
    # The models forbid unknown fields where code builds an event; readers must not (`decode`).
    schema.pop("additionalProperties", None)
    return schema


# Nested models (usage, tokens) live in the document's `components.schemas`, where `$ref`s point.
_COMPONENT_REF = "#/components/schemas/{model}"


def _message(event: type[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event's AsyncAPI message, and the nested schemas its payload refers to."""
    data = open_schema(event, _COMPONENT_REF)
    nested = data.pop("$defs", {})
    return {
        "name": event.event_type,
        "title": event.event_type,
        "summary": (event.__doc__ or "").strip(),
        "tags": _visibility(event in PUBLIC_EVENTS),
        "contentType": "application/json",
        "headers": _headers(event),
        "payload": {"type": "object", "required": [*ENVELOPE_FIELDS, "data"],
                    "properties": {**ENVELOPE_FIELDS, "version": {"type": "integer", "const": event.version},
                                   "data": data}},
    }, nested


def asyncapi_document(topics: TopicSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI document for the topics as configured (default names when not given)."""
    names = topics or TopicSettings.model_validate({})
    channels, operations = {}, {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for name, event in sorted(EVENT_TYPES.items()):
        messages[name], nested = _message(event)
        for model, schema in nested.items():
            # One name, one schema: two models of the same name would make a reference ambiguous.
            if schemas.setdefault(model, schema) != schema:
                raise ValueError(f"two different nested models are named {model}")
    for key, (publisher, events) in CHANNELS.items():
        channels[key] = {
            "address": getattr(names, key),
            "description": f"{'Public' if key in PUBLIC_CHANNELS else 'Internal'}. "
                           f"Published by {publisher}; key = job id.",
            "tags": _visibility(key in PUBLIC_CHANNELS),
            "messages": {event.event_type: {"$ref": f"#/components/messages/{event.event_type}"}
                         for event in events},
        }
        operations[f"consume_{key}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "LotLens events", "version": "1.0.0",
                 "description": RULES},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def main() -> None:
    """Print the document."""
    print(json.dumps(asyncapi_document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
