"""The wire format of events: an envelope around a versioned payload, and upcasting on read.

Serialisation happens only here, at the Kafka edge; handlers see `Envelope` objects.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel

from lotlens_common.events import (
    EVENT_TYPES,
    Event,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
)
from lotlens_common.model.usage import Usage
from lotlens_common.uuids import uuid5_text


class UndecodableEvent(ValueError):
    """A message that is not a LotLens event we can read (it goes to the dead-letter topic)."""


class FutureEvent(UndecodableEvent):
    """An event a newer release wrote: a version of its type newer than this code reads, or a
    type this code does not know. Never read as something older (it is dead-lettered as
    `future-version`, and replayed once this service is upgraded)."""


# (event type, version it upgrades from) -> function turning that payload into the next version.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


@dataclass(frozen=True)
class Envelope:
    """One event with its metadata."""

    event: Event
    client_id: str
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    trace: dict[str, str] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        """The job the event belongs to (also the Kafka message key)."""
        return self.event.job_id

    @property
    def type(self) -> str:
        """The event's type name."""
        return self.event.event_type


# Fixed for good: changing it would give re-published events new ids.
_CAUSED_IDS = uuid.UUID("6f1c9a52-3b7e-4d0a-9c41-2f8e5d7b1a60")


def caused(event: Event, client_id: str, cause: str) -> Envelope:
    """The envelope of `event`, with an id derived from what caused it.

    A service that publishes, then dies before recording that it did, publishes again after its
    restart; with a fresh id each time, a subscriber that deduplicates by `event_id` (as the
    contract tells it to) took the second copy for a new event. `cause` names the occurrence
    (e.g. a shard and a lot), so the copy carries the first one's id.
    """
    event_id = uuid5_text(_CAUSED_IDS, f"{event.event_type}\n{event.job_id}\n{cause}")
    # As `Envelope(event=..., client_id=..., event_id=...)` makes it (its defaults: now, no trace),
    # set as a decoded one's fields are: the frozen dataclass's `__init__` took 1.2 us an event
    # where this takes 0.4, for every event a stage publishes (tests/unit/test_event_encode_fast_path.py
    # holds the two to one another).
    return _envelope(event, client_id, event_id, datetime.now(UTC), {})


# Payloads of text, numbers, lists, text maps and a `Usage` only, the events every lot makes:
# orjson writes them from the model's fields (`_fields`) byte for byte as pydantic does (a datetime
# it writes otherwise), in 1.3 us where pydantic's serialiser took 5.9 an envelope (four a lot on
# their way through the stages). tests/unit/test_event_payload_bytes.py holds them to both.
PLAIN_PAYLOADS: frozenset[type[Event]] = frozenset({
    LotSubmitted, VisionBatchSubmitted, VisionCompleted, TranslationBatchSubmitted, TranslationCompleted,
    LotFailed})


# Each model's field names, kept at its first use: `model_fields`, a property pydantic builds anew
# at each read, was 6% of decoding an event (150,000 of them in a 50,000-lot job, in every consumer).
_FIELD_NAMES: dict[type[BaseModel], frozenset[str]] = {}


def _field_names(cls: type[BaseModel]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(cls.model_fields)
    return names


# The models orjson writes, with their field names. Their `__dict__` can hold more than the fields
# pydantic writes: a key a `model_copy(update=...)` added, or a subclass's fields where the declared
# type is the base class. Named here, once (every class is defined by now): `_fields` runs twice an
# event, and looking each name set up through `_field_names`, with an `isinstance` the exact class
# already implies, was 5,200 of the 16,000 instructions a VisionCompleted's payload took.
_WRITTEN_MODELS: tuple[type[BaseModel], ...] = (*PLAIN_PAYLOADS, Usage)
_WRITTEN_FIELDS: dict[type, frozenset[str]] = {cls: _field_names(cls) for cls in _WRITTEN_MODELS}


def _fields(model: object) -> dict[str, Any]:
    """A nested model's fields, in their order, for orjson (pydantic keeps them in `__dict__`);
    TypeError, for pydantic to write it, for any model whose `__dict__` is not exactly its fields."""
    names = _WRITTEN_FIELDS.get(type(model))
    if names is None or model.__dict__.keys() != names:
        raise TypeError(f"{type(model).__name__}: not written by orjson")
    return model.__dict__


def encode(envelope: Envelope) -> bytes:
    """Serialise an envelope to the JSON bytes written to Kafka."""
    event = envelope.event
    # One dict, its `data` set last (a copy of the head for it was 0.15 us an event).
    document: dict[str, Any] = {
        "event_id": envelope.event_id,
        "type": event.event_type,
        "version": event.version,
        "occurred_at": envelope.occurred_at,
        "job_id": event.job_id,
        "client_id": envelope.client_id,
        "trace": envelope.trace,
        "data": event,
    }
    if type(event) in PLAIN_PAYLOADS:
        try:
            return orjson.dumps(document, default=_fields)
        except orjson.JSONEncodeError:
            pass  # a value orjson refuses (an integer past 64 bits): pydantic writes it
    # pydantic writes the payload's JSON itself: a third of the cost of a dict for orjson.
    document["data"] = orjson.Fragment(event.model_dump_json())
    return orjson.dumps(document)


CLOUDEVENTS_SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"


def cloudevent_type(event_type: str) -> str:
    """The CloudEvents `type` of a LotLens event type (reverse-DNS prefixed, as the spec asks)."""
    return f"lotlens.{event_type}"


def dataschema(event_type: str, version: int) -> str:
    """The CloudEvents `dataschema` of an event: names its JSON Schema,
    docs/events/schemas/<type>/v<version>.json in the repository."""
    return f"urn:lotlens:events:{event_type}:v{version}"


def cloudevent_headers(envelope: Envelope, source: str) -> list[tuple[str, bytes]]:
    """An event's Kafka headers: LotLens's own `type`, and the CloudEvents Kafka binding's
    binary-mode headers (the message value is the event's data, `content-type` says it is JSON),
    so generic tooling can route and show LotLens events without knowing the envelope."""
    return _cloudevent_headers(envelope.event_id, envelope.type, envelope.event.version,
                               _iso_time(envelope.occurred_at), envelope.job_id, source)


def _iso_time(moment: datetime) -> bytes:
    """`moment.isoformat()`, encoded: written by orjson for a time in UTC (every event's, `caused`
    and the envelope's default), in 0.2 us where `isoformat` took 0.8; the same text, as
    tests/unit/test_event_encode_fast_path.py holds."""
    if moment.tzinfo is UTC:
        return orjson.dumps(moment)[1:-1]
    return moment.isoformat().encode()


def encoded_cloudevent_headers(raw: bytes, source: str) -> list[tuple[str, bytes]]:
    """The same headers for an envelope already encoded (e.g. kept in the gateway's outbox)."""
    try:
        doc = orjson.loads(raw)
        return _cloudevent_headers(str(doc["event_id"]), str(doc["type"]), int(doc["version"]),
                                   str(doc["occurred_at"]).encode(), str(doc["job_id"]), source)
    except Exception as exc:  # whatever broke, it is not an envelope `encode` wrote
        raise UndecodableEvent(f"not an encoded envelope: {exc}") from exc


# LotLens's own header naming the event type: a consumer can pass over types it does not act on
# without decoding them.
TYPE_HEADER = "type"


def _cloudevent_headers(event_id: str, event_type: str, version: int, occurred_at: bytes, job_id: str,
                        source: str) -> list[tuple[str, bytes]]:
    kind, specversion, producer, ce_type, schema, content_type = _fixed_headers(event_type, version, source)
    return [kind, specversion, ("ce_id", event_id.encode()), producer, ce_type,
            ("ce_time", occurred_at), ("ce_subject", job_id.encode()), schema, content_type]


@functools.cache
def _fixed_headers(event_type: str, version: int, source: str) -> tuple[tuple[str, bytes], ...]:
    # The headers every event of a type, version and producer shares: built once, not per event.
    return ((TYPE_HEADER, event_type.encode()),
            ("ce_specversion", CLOUDEVENTS_SPECVERSION.encode()),
            ("ce_source", source.encode()),
            ("ce_type", cloudevent_type(event_type).encode()),
            ("ce_dataschema", dataschema(event_type, version).encode()),
            ("content-type", CONTENT_TYPE.encode()))


def decode(raw: bytes) -> Envelope:
    """Parse bytes from Kafka into an envelope, upcasting old payload versions.

    A tolerant reader, as the contract asks of every subscriber: a field this code does not know
    is ignored (a newer release added it to the version, a compatible addition the schema check
    lets through), and an envelope of a type it does not know is a `FutureEvent`, not garbage.
    """
    # Every consumer decodes each event it reads (150,000 a 50,000-lot job in the result-store):
    # orjson's objects are fresh dicts, kept as they are (only another shape is copied, or
    # refused, as `dict()` does), and the model's validator is called without `model_validate`'s
    # wrapper: 5.2-6.3 us an event where it took 6.5-7.5. tests/unit/test_event_decode_fast_path.py
    # holds it to the former decoding.
    try:
        doc = orjson.loads(raw)
        event_type, version, data = doc["type"], doc["version"], doc["data"]
        if type(data) is not dict:
            data = dict(data)
        if not isinstance(event_type, str) or not isinstance(version, int):
            raise TypeError(f"type {event_type!r} and version {version!r} are not a name and a number")
        client_id, event_id = str(doc["client_id"]), str(doc["event_id"])
        occurred_at = datetime.fromisoformat(doc["occurred_at"])
        trace = doc.get("trace") or {}
        if type(trace) is not dict:
            trace = dict(trace)
    except Exception as exc:  # any malformed message is a poison message, whatever broke
        raise UndecodableEvent(f"cannot decode event: {exc}") from exc
    event_cls = EVENT_TYPES.get(event_type)
    if event_cls is None:
        raise FutureEvent(f"event type {event_type} (version {version}) is not one this code reads: "
                          "a newer release's")
    # Read once: pydantic's metaclass has a `__getattr__`, so each read of a class attribute goes
    # through Python's slower lookup (about 850 instructions), and `version` was read twice.
    current = event_cls.version
    if version > current:
        raise FutureEvent(f"{event_cls.event_type} version {version} is newer than the "
                          f"version {current} this code reads")
    try:
        while version < current:
            data = UPCASTERS[(event_cls.event_type, version)](data)
            version += 1
        known, validate = _READERS.get(event_cls) or _reader(event_cls)
        if not data.keys() <= known:
            # The model stays strict where code builds it (a misspelt field is a bug there).
            data = {name: value for name, value in data.items() if name in known}
        event = validate(data)
    except Exception as exc:  # any malformed message is a poison message, whatever broke
        raise UndecodableEvent(f"cannot decode event: {exc}") from exc
    return _envelope(event, client_id, event_id, occurred_at, trace)


# Each event class's field names and validator, kept at its first decoding: the validator read
# from the class each time went through the metaclass's `__getattr__` (see `decode`). Not its
# `version`, read at each decoding: a release's classes are fixed, but a test upgrades one in place.
# The names are `_field_names`' own, kept beside the validator so that a decoding makes one lookup.
_READERS: dict[type[Event], tuple[frozenset[str], Callable[[Any], Event]]] = {}


def _reader(event_cls: type[Event]) -> tuple[frozenset[str], Callable[[Any], Event]]:
    reader = _READERS[event_cls] = (_field_names(event_cls), event_cls.__pydantic_validator__.validate_python)
    return reader


def _envelope(event: Event, client_id: str, event_id: str, occurred_at: datetime,
              trace: dict[str, str]) -> Envelope:
    """The envelope of a decoded or a `caused` event, its fields set as the dataclass's `__init__` sets them:
    that one, through `object.__setattr__` field by field (the class is frozen), took 1.8 us more
    an event."""
    envelope = object.__new__(Envelope)
    envelope.__dict__.update(event=event, client_id=client_id, event_id=event_id,
                             occurred_at=occurred_at, trace=trace)
    return envelope
