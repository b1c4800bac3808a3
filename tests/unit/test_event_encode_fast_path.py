"""The envelope `caused` makes without the frozen dataclass's `__init__`, and the time header
written by orjson, are what the dataclass and `isoformat` make: every event a stage publishes
goes through both."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from lotlens_common import envelope as wire
from lotlens_common.envelope import _CAUSED_IDS, Envelope, caused, cloudevent_headers, dataschema, encode
from lotlens_common.events import LotFailed, TranslationCompleted, VisionCompleted
from lotlens_common.model.usage import Usage

SOURCE = "/lotlens/vision-stage"


def _events() -> list[VisionCompleted | TranslationCompleted | LotFailed]:
    usage = Usage(input_tokens=869, output_tokens=86, reasoning_tokens=64, model="o4-mini",
                  estimated_cost_usd=0.0006)
    return [VisionCompleted(job_id="job-1", lot_id="lot-1", english_html="<p>Dent.</p>",
                            languages=("en", "de"), total_lots=2, processed_images=5, missing_images=(),
                            usage=usage),
            TranslationCompleted(job_id="job-1", lot_id="lot-1", descriptions={"en": "<p>Dent.</p>"}),
            LotFailed(job_id="job-2", lot_id="lot-ü", stage="translation", reason="no answer")]


def test_a_caused_envelope_is_the_envelope_the_dataclass_makes() -> None:
    for event in _events():
        before = datetime.now(UTC)
        got = caused(event, "client-1", "collect shard-1 lot-1")
        name = f"{event.event_type}\n{event.job_id}\ncollect shard-1 lot-1"
        expected_id = str(uuid.uuid5(_CAUSED_IDS, name))
        assert got == Envelope(event=event, client_id="client-1", event_id=expected_id,
                               occurred_at=got.occurred_at)
        assert got.occurred_at.tzinfo is UTC and before <= got.occurred_at <= datetime.now(UTC)
        assert type(got.trace) is dict and got.trace == {}
        # Each envelope its own trace: a tracer adding to one may not add to another's.
        assert caused(event, "client-1", "collect shard-1 lot-1").trace is not got.trace


def test_a_caused_envelope_is_made_without_the_dataclasss_init(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1.2 us of the 2.8 an envelope took, for each of a job's 100,000 per-lot results.
    def refused(self: Envelope, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the dataclass's __init__ was called")

    monkeypatch.setattr(Envelope, "__init__", refused)
    assert caused(_events()[0], "client-1", "collect shard-1 lot-1").client_id == "client-1"


def _moments(rng: random.Random) -> list[datetime]:
    """Times in UTC (a microsecond or none, any year), in other offsets, and naive."""
    zones = [timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30)),
             timezone(timedelta(hours=5, minutes=45, seconds=30)), timezone(timedelta(0), "Z"), None]
    made = [datetime(2026, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime.now(UTC)]
    for _ in range(3000):
        moment = datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, rng.randint(0, 999_999)]))
        made += [moment.replace(tzinfo=UTC), moment.replace(tzinfo=rng.choice(zones))]
    return made


def test_an_events_time_header_is_its_time_in_iso_format() -> None:
    event = _events()[0]
    for moment in _moments(random.Random(4411)):
        envelope = Envelope(event=event, client_id="client-1", event_id="id-1", occurred_at=moment)
        assert cloudevent_headers(envelope, SOURCE) == [
            ("type", b"VisionCompleted"), ("ce_specversion", b"1.0"), ("ce_id", b"id-1"),
            ("ce_source", SOURCE.encode()), ("ce_type", b"lotlens.VisionCompleted"),
            ("ce_time", moment.isoformat().encode()), ("ce_subject", b"job-1"),
            ("ce_dataschema", dataschema("VisionCompleted", 1).encode()),
            ("content-type", b"application/json"),
        ], moment


def test_a_per_lot_payload_is_written_without_looking_up_its_models_field_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # orjson calls `_fields` for the event and its usage: each looked its class's names up through
    # `_field_names` (and checked `isinstance`, which the exact class implies), 5,200 of the
    # 16,000 instructions the payload took. Named once, pydantic still never writes it.
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("looked up per event, or written by pydantic")

    monkeypatch.setattr(wire, "_field_names", refused)
    monkeypatch.setattr(VisionCompleted, "model_dump_json", refused)
    written = orjson.loads(encode(caused(_events()[0], "client-1", "collect shard-1 lot-1")))
    assert written["data"]["usage"]["input_tokens"] == 869 and written["data"]["lot_id"] == "lot-1"
