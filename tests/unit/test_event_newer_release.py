"""Events a newer release wrote, as this release reads them: a field added to a version (a
compatible addition, which the schema check lets through) is ignored, a type added is a future
event to replay after the upgrade, and bytes that are no envelope at all stay undecodable."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from lotlens_common import dead_letters
from lotlens_common.envelope import Envelope, FutureEvent, UndecodableEvent, decode, encode
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
from lotlens_common.kafka import dead_letter_reason

WHEN = datetime(2026, 1, 1, tzinfo=UTC)

# One event of every type, with its defaulted fields left out: what the newer release's
# `model_dump_json` writes for them (null) is what an older reader meets.
EVENTS: tuple[Event, ...] = (
    JobSubmitted(job_id="j", client_id="c", api_version="2.0", languages=("en",), total_lots=2,
                 webhook_urls=("https://hooks.example.com/h",), created_at=WHEN, estimated_completion=WHEN),
    LotSubmitted(job_id="j", lot_id="l", seq=0, total_lots=2, additional_info="Camry",
                 image_urls=("https://img.example.com/1.jpg",), languages=("en",)),
    VisionBatchSubmitted(job_id="j", shard_id="s", attempt=1, batch_id="batch_1", lot_ids=("l",)),
    VisionCompleted(job_id="j", lot_id="l", english_html="<p>x</p>", languages=("en",), total_lots=2,
                    processed_images=1, missing_images=()),
    TranslationBatchSubmitted(job_id="j", shard_id="s", attempt=1, batch_id="batch_2", lot_ids=("l",)),
    TranslationCompleted(job_id="j", lot_id="l", descriptions={"en": "<p>x</p>"}),
    LotFailed(job_id="j", lot_id="l", stage="vision", reason="no image"),
    JobCancelled(job_id="j", cancelled_at=WHEN),
    JobCompleted(job_id="j", status="completed", completed_at=WHEN, total_lots=2, processed_lots=2,
                 failed_lots=0),
    WebhookAttempted(job_id="j", delivery_id="d", webhook_url="https://hooks.example.com/h", attempt=1,
                     attempted_at=WHEN, succeeded=True),
    WebhookDelivered(job_id="j", delivery_id="d", webhook_url="https://hooks.example.com/h", attempts=1,
                     delivered_at=WHEN),
    WebhookFailed(job_id="j", delivery_id="d", webhook_url="https://hooks.example.com/h", attempts=3,
                  failed_at=WHEN, error="timeout"),
    WebhookRedeliveryRequested(job_id="j", redelivery_id="r", requested_at=WHEN),
)


def _wire(event: Event) -> dict[str, object]:
    doc: dict[str, object] = orjson.loads(encode(Envelope(event=event, client_id="c", event_id="e",
                                                          occurred_at=WHEN)))
    return doc


def test_there_is_an_event_of_every_type() -> None:
    assert {event.event_type for event in EVENTS} == set(EVENT_TYPES)


@pytest.mark.parametrize("added", [None, {"kind": "anything"}], ids=["null", "a value"])
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event_type)
def test_a_field_a_newer_release_added_to_an_event_is_ignored(event: Event, added: object) -> None:
    # It was undecodable ("Extra inputs are not permitted"): an older pod dead-lettered every
    # event of a newer one (the runbook said to discard them), its job never finished.
    doc = _wire(event)
    doc["data"] = {**doc["data"], "added_by_a_newer_release": added}  # type: ignore[dict-item]
    assert decode(orjson.dumps(doc)).event == event


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event_type)
def test_an_event_type_a_newer_release_added_is_a_future_event(event: Event) -> None:
    # It was `undecodable`: left out of `dlq replay --all`, discarded by the runbook, skipped by a
    # rebuild instead of stopping it for the newer release.
    doc = {**_wire(event), "type": f"{event.event_type}Revised"}
    with pytest.raises(FutureEvent) as raised:
        decode(orjson.dumps(doc))
    assert dead_letter_reason(raised.value) == dead_letters.FUTURE_VERSION
    assert f"{event.event_type}Revised" in str(raised.value)


@pytest.mark.parametrize("raw", [
    b"{not json", b'{"type": "NoSuchEvent"}', b"[1, 2]",
    b'{"event_id": "e", "type": "NoSuchEvent", "version": "one", "job_id": "j",'
    b' "occurred_at": "2026-01-01T00:00:00+00:00", "client_id": "c", "data": {}}'])
def test_bytes_that_are_no_envelope_stay_undecodable(raw: bytes) -> None:
    with pytest.raises(UndecodableEvent) as raised:
        decode(raw)
    assert dead_letter_reason(raised.value) == dead_letters.UNDECODABLE


def test_a_known_event_missing_a_field_of_its_version_stays_undecodable() -> None:
    doc = _wire(JobCancelled(job_id="j", cancelled_at=WHEN))
    doc["data"] = {"job_id": "j"}
    with pytest.raises(UndecodableEvent) as raised:
        decode(orjson.dumps(doc))
    assert dead_letter_reason(raised.value) == dead_letters.UNDECODABLE


def test_code_that_builds_an_event_with_a_field_it_does_not_have_still_fails() -> None:
    # The models stay strict where they are built (a misspelt field is a bug, not a newer release).
    with pytest.raises(ValidationError):
        JobCancelled(job_id="j", cancelled_at=WHEN, cancelled_by="me")  # type: ignore[call-arg]
