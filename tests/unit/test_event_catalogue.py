"""The event catalogue and wire format downstream systems rely on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest
from pydantic import create_model

from lotlens_common.catalogue import CHANNELS, asyncapi_document
from lotlens_common.envelope import UPCASTERS, Envelope, UndecodableEvent, decode, encode
from lotlens_common.events import (
    EVENT_TYPES,
    Event,
    JobCancelled,
    JobCompleted,
    LotSubmitted,
    TranslationCompleted,
)
from lotlens_common.model.usage import JobUsage, Tokens, Usage
from tests.k8s import tools
from tests.public_events import data_errors, message_errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_committed_asyncapi_document_matches_the_event_models() -> None:
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(asyncapi_document())), (
        "regenerate with: python -m lotlens_common.catalogue > docs/asyncapi.json")


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    # Held only to our own models before: a subscriber's AsyncAPI tooling (code generators, the
    # studio) reads it by the AsyncAPI Initiative's schema (npm @asyncapi/specs, fetched by
    # scripts/tools.sh), which must find nothing wrong; and it would find a broken document.
    schema = json.loads((tools() / "asyncapi-3.0.0.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    document = json.loads(DOC.read_text())
    assert [error.message for error in validator.iter_errors(document)] == []
    document["channels"]["completions"]["address"] = 5
    assert [error.message for error in validator.iter_errors(document)] != []


def test_every_event_type_is_on_a_documented_channel() -> None:
    published = {event.event_type for _, events in CHANNELS.values() for event in events}
    assert published == set(EVENT_TYPES)


def test_an_envelope_survives_the_wire_unchanged() -> None:
    event = LotSubmitted(job_id="j", lot_id="l", seq=0, total_lots=2, additional_info="Camry, ДТП",
                         image_urls=("https://a/1.jpg",), languages=("en", "ru"), webhook=None)
    envelope = Envelope(event=event, client_id="c", occurred_at=WHEN, trace={"traceparent": "00-x"})
    assert decode(encode(envelope)) == envelope


def test_the_payload_on_the_wire_is_the_models_json_form() -> None:
    event = JobCancelled(job_id="j-ü", cancelled_at=datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC))
    raw = encode(Envelope(event=event, client_id="c", occurred_at=WHEN))
    assert orjson.loads(raw)["data"] == event.model_dump(mode="json")
    assert b'"data":{"job_id":"j-\xc3\xbc","cancelled_at":"2026-01-01T12:30:15.123456Z"' in raw


def test_an_old_payload_version_is_upcast_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # A hypothetical version 0 of JobCancelled had no cancellation time.
    monkeypatch.setitem(UPCASTERS, ("JobCancelled", 0),
                        lambda data: {**data, "cancelled_at": WHEN.isoformat()})
    raw = orjson.dumps({"event_id": "e", "type": "JobCancelled", "version": 0, "job_id": "j",
                        "occurred_at": WHEN.isoformat(), "client_id": "c", "data": {"job_id": "j"}})
    assert decode(raw).event == JobCancelled(job_id="j", cancelled_at=WHEN)


def test_a_message_that_is_not_an_event_is_reported_as_undecodable() -> None:
    with pytest.raises(UndecodableEvent):
        decode(b'{"type": "NoSuchEvent"}')


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    return [r for v in node for r in _refs(v)] if isinstance(node, list) else []


def test_every_reference_in_the_asyncapi_document_resolves_inside_it() -> None:
    # A subscriber generates its models or validator from the document alone.
    document = json.loads(DOC.read_text())
    dangling = []
    for ref in set(_refs(document)):
        node: object = document
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            dangling.append(ref)
    assert sorted(dangling) == []


def _with_usage() -> list[Envelope]:
    usage = Usage(model="o4-mini", input_tokens=10, output_tokens=5)
    job_usage = JobUsage(input_tokens=10, output_tokens=5, by_model={"o4-mini": Tokens(input_tokens=10)})
    return [Envelope(TranslationCompleted(job_id="j", lot_id="l", descriptions={"en": "<p>x</p>"},
                                          usage=usage), client_id="c", occurred_at=WHEN),
            Envelope(JobCompleted(job_id="j", status="completed", completed_at=WHEN, total_lots=1,
                                  processed_lots=1, failed_lots=0, usage=job_usage),
                     client_id="c", occurred_at=WHEN)]


def test_events_with_usage_validate_against_their_asyncapi_message() -> None:
    for envelope in _with_usage():
        assert message_errors(envelope.type, {}, orjson.loads(encode(envelope))) == []


def test_an_asyncapi_subscriber_accepts_a_field_a_later_release_adds_to_the_version() -> None:
    # The contract: within a version fields are only added; subscribers ignore what they do not know.
    fields = {name: (info.annotation, info) for name, info in JobCancelled.model_fields.items()}
    grown = create_model("JobCancelled", __base__=Event, **fields,  # type: ignore[call-overload]
                         reason=(str | None, None))
    grown.event_type, grown.version = JobCancelled.event_type, JobCancelled.version
    event = grown.model_validate({"job_id": "j", "cancelled_at": WHEN, "reason": "duplicate order"})
    envelope = Envelope(event, client_id="c", occurred_at=WHEN)
    value = orjson.loads(encode(envelope))
    assert data_errors("urn:lotlens:events:JobCancelled:v1", value["data"]) == []
    assert message_errors("JobCancelled", {}, value) == []
