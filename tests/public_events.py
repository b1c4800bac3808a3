"""What a subscriber is told about the public topics, checked against messages read from Kafka:
the released JSON Schemas (docs/events/schemas), the AsyncAPI document (docs/asyncapi.json) and
the README's rules on keys and headers, with the well-known `jsonschema` validator."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, cast

import jsonschema
import referencing.exceptions
from confluent_kafka import Message
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from lotlens_common.catalogue import CHANNELS, PUBLIC_CHANNELS, PUBLIC_EVENTS

DOCS = Path(__file__).resolve().parents[1] / "docs"
ASYNCAPI_URI = "urn:lotlens:asyncapi"
PUBLIC_TYPES = {event.event_type for event in PUBLIC_EVENTS}


@cache
def asyncapi() -> dict[str, Any]:
    """The committed AsyncAPI document, as a subscriber downloads it."""
    document: dict[str, Any] = json.loads((DOCS / "asyncapi.json").read_text())
    return document


@cache
def released_schema(dataschema: str) -> dict[str, Any]:
    """The released JSON Schema a `ce_dataschema` header names (urn:lotlens:events:<type>:v<n>)."""
    _, _, _, event_type, version = dataschema.split(":")
    path = DOCS / "events" / "schemas" / event_type / f"{version}.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    assert schema["$id"] == dataschema
    return schema


def _validator(pointer: str) -> jsonschema.Draft202012Validator:
    """A validator of a part of the AsyncAPI document, its `$ref`s resolved inside the document."""
    registry: Registry[Any] = Registry().with_resource(ASYNCAPI_URI, DRAFT202012.create_resource(asyncapi()))
    return jsonschema.Draft202012Validator({"$ref": f"{ASYNCAPI_URI}#{pointer}"}, registry=registry,
                                           format_checker=jsonschema.FormatChecker())


def message_errors(event_type: str, headers: dict[str, str], value: Any) -> list[str]:
    """Why a message's headers and value break the AsyncAPI message of its type (empty: they do not)."""
    pointer = f"/components/messages/{event_type}"
    found = []
    for part, instance in (("headers", headers), ("payload", value)):
        try:
            errors = list(_validator(f"{pointer}/{part}").iter_errors(instance))
        except referencing.exceptions.Unresolvable as exc:  # the document's fault: say which `$ref`
            found.append(f"{event_type} {part}: the AsyncAPI document cannot resolve {exc.ref!r}")
            continue
        found += [f"{event_type} {part} {list(e.absolute_path)}: {e.message}" for e in errors]
    return found


def data_errors(dataschema: str, data: Any) -> list[str]:
    """Why `data` breaks the released JSON Schema named by `dataschema` (empty: it does not)."""
    validator = jsonschema.Draft202012Validator(released_schema(dataschema),
                                                format_checker=jsonschema.FormatChecker())
    return [f"{dataschema} {list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def public_topics(topics: Any) -> dict[str, frozenset[str]]:
    """Each public topic's address and the public event types the contract lists on it."""
    return {getattr(topics, key): frozenset(e.event_type for e in CHANNELS[key][1]) & PUBLIC_TYPES
            for key in PUBLIC_CHANNELS}


def headers_of(message: Message) -> dict[str, str]:
    """A message's headers as text."""
    pairs = cast(list[tuple[str, bytes | None]], message.headers() or [])
    return {name: (value or b"").decode() for name, value in pairs}


def contract_errors(message: Message, listed: frozenset[str]) -> list[str]:
    """Everything the README, the AsyncAPI document and the released schemas say about one public
    message that it does not hold to; `listed` are the public types of its topic."""
    headers = headers_of(message)
    envelope = json.loads(message.value() or b"")
    kind = headers.get("type")
    where = f"{message.topic()}:{message.partition()}:{message.offset()} {kind}"
    if kind not in PUBLIC_TYPES:
        return []  # internal types share the public topics; subscribers pass over them by header
    found = [] if kind in listed else [f"{where}: a public type the contract does not list on this topic"]
    found += [f"{where}: {e}" for e in message_errors(kind, headers, envelope)]
    found += [f"{where}: {e}" for e in data_errors(headers.get("ce_dataschema", ""), envelope["data"])]
    expected = {"type": envelope["type"], "ce_id": envelope["event_id"], "ce_subject": envelope["job_id"]}
    found += [f"{where}: header {name} is {headers.get(name)!r}, the envelope says {value!r}"
              for name, value in expected.items() if headers.get(name) != value]
    if (message.key() or b"").decode() != envelope["job_id"]:
        found.append(f"{where}: key {message.key()!r} is not the job id {envelope['job_id']!r}")
    occurred_at = envelope["occurred_at"]
    if datetime.fromisoformat(headers.get("ce_time", "")) != datetime.fromisoformat(occurred_at):
        found.append(f"{where}: ce_time {headers.get('ce_time')} is not occurred_at {occurred_at}")
    return found
