"""The event catalogue as an AsyncAPI 3.0 document, generated from the event models themselves.

`python -m lotlens_common.catalogue > docs/asyncapi.json` refreshes the committed copy; a test
fails when the copy and the models drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from lotlens_common.events import (
    EVENT_TYPES,
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

ENVELOPE_FIELDS = {
    "event_id": {"type": "string", "format": "uuid"},
    "type": {"type": "string", "description": "The event type, e.g. `LotSubmitted`"},
    "version": {"type": "integer", "description": "Schema version of `data` (older versions are upcast)"},
    "occurred_at": {"type": "string", "format": "date-time"},
    "job_id": {"type": "string", "description": "Also the Kafka message key: a job's events stay in order"},
    "client_id": {"type": "string"},
    "trace": {"type": "object", "additionalProperties": {"type": "string"}},
}


def _message(event: type[Any]) -> dict[str, Any]:
    data = event.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
    return {
        "name": event.event_type,
        "title": event.event_type,
        "summary": (event.__doc__ or "").strip(),
        "contentType": "application/json",
        "headers": {"type": "object", "properties": {"type": {"type": "string", "const": event.event_type}}},
        "payload": {"type": "object", "required": [*ENVELOPE_FIELDS, "data"],
                    "properties": {**ENVELOPE_FIELDS, "version": {"type": "integer", "const": event.version},
                                   "data": data}},
    }


def asyncapi_document(topics: TopicSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI document for the topics as configured (default names when not given)."""
    names = topics or TopicSettings.model_validate({})
    channels, operations = {}, {}
    for key, (publisher, events) in CHANNELS.items():
        channels[key] = {
            "address": getattr(names, key),
            "description": f"Published by {publisher}; key = job id.",
            "messages": {event.event_type: {"$ref": f"#/components/messages/{event.event_type}"}
                         for event in events},
        }
        operations[f"consume_{key}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "LotLens events", "version": "1.0.0",
                 "description": "Every event is a JSON envelope around a versioned `data` payload."},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": {name: _message(event) for name, event in sorted(EVENT_TYPES.items())}},
    }


def main() -> None:
    """Print the document."""
    print(json.dumps(asyncapi_document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
