"""The bytes of a payload written by orjson from the model's fields (the events every lot makes)
are the bytes pydantic writes for the model: the contract on Kafka does not change with the writer."""

from __future__ import annotations

import random
import types
import typing
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from lotlens_common import envelope as wire
from lotlens_common.envelope import Envelope, decode, encode
from lotlens_common.events import (
    Event,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
)
from lotlens_common.model.usage import Usage

WHEN = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
# Text a model or a client can send: quotes, backslashes, control characters, separators that
# JavaScript treats as line ends, other scripts, emoji, a NUL (LotFailed's reason drops it).
PIECES = ['"', "\\", "\n", "\t", "\x00", "\x01", "\x1f", "\x7f", "\u2028", "\u2029", "é", "ДТП", "事故",
          "🚗", "<p>", "&amp;", "/", "a", " ", "0.1"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))


def _usage(rng: random.Random) -> Usage | None:
    if rng.random() < 0.2:
        return None
    cost = None if rng.random() < 0.2 else rng.random() * 10 ** rng.randint(-9, 3)
    return Usage(input_tokens=rng.randint(0, 10**7), cached_input_tokens=rng.randint(0, 10**6),
                 output_tokens=rng.randint(0, 10**6), reasoning_tokens=rng.randint(0, 10**5),
                 estimated_cost_usd=cost, model=None if rng.random() < 0.1 else _text(rng))


def _texts(rng: random.Random) -> tuple[str, ...]:
    return tuple(_text(rng) for _ in range(rng.randint(0, 4)))


def _events(rng: random.Random) -> list[Event]:
    return [
        LotSubmitted(job_id=_text(rng), lot_id=_text(rng), seq=rng.randint(0, 10**6),
                     total_lots=rng.randint(1, 10**6), additional_info=_text(rng), image_urls=_texts(rng),
                     languages=_texts(rng), webhook=rng.choice([None, _text(rng)])),
        VisionBatchSubmitted(job_id=_text(rng), shard_id=_text(rng), attempt=rng.randint(0, 9),
                             batch_id=_text(rng), lot_ids=_texts(rng)),
        TranslationBatchSubmitted(job_id=_text(rng), shard_id=_text(rng), attempt=rng.randint(0, 9),
                                  batch_id=_text(rng), lot_ids=_texts(rng)),
        VisionCompleted(job_id=_text(rng), lot_id=_text(rng), english_html=_text(rng), languages=_texts(rng),
                        total_lots=rng.randint(1, 10**6), processed_images=rng.randint(0, 20),
                        missing_images=_texts(rng), usage=_usage(rng)),
        TranslationCompleted(job_id=_text(rng), lot_id=_text(rng),
                             descriptions={_text(rng): _text(rng) for _ in range(rng.randint(0, 4))},
                             usage=_usage(rng)),
        LotFailed(job_id=_text(rng), lot_id=_text(rng), stage=rng.choice(["intake", "vision", "translation"]),
                  reason=_text(rng), total_lots=rng.randint(0, 10**6), processed_images=rng.randint(0, 20),
                  missing_images=_texts(rng), usage=_usage(rng),
                  descriptions={_text(rng): _text(rng) for _ in range(rng.randint(0, 3))}),
    ]


def _as_pydantic_writes_it(envelope: Envelope) -> bytes:
    return orjson.dumps({
        "event_id": envelope.event_id, "type": envelope.type, "version": envelope.event.version,
        "occurred_at": envelope.occurred_at, "job_id": envelope.job_id, "client_id": envelope.client_id,
        "trace": envelope.trace, "data": orjson.Fragment(envelope.event.model_dump_json()),
    })


def test_every_per_lot_event_is_written_byte_for_byte_as_pydantic_writes_it() -> None:
    rng = random.Random(14)
    for _ in range(500):
        for event in _events(rng):
            envelope = Envelope(event=event, client_id=_text(rng), occurred_at=WHEN, trace={"tp": "x"})
            assert encode(envelope) == _as_pydantic_writes_it(envelope), event
            assert decode(encode(envelope)) == envelope


@pytest.mark.parametrize("event", _events(random.Random(1)), ids=lambda event: event.event_type)
def test_a_per_lot_event_is_written_without_pydantics_serialiser(
        event: Event, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stage publishes one of these for every lot (50,000 a job): pydantic's serialiser took
    # 2.7 us of the 5.9 us an envelope's bytes cost.
    def refused(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("pydantic's serialiser was called")

    monkeypatch.setattr(type(event), "model_dump_json", refused)
    assert orjson.loads(encode(Envelope(event=event, client_id="c", occurred_at=WHEN)))["data"]


def test_a_value_orjson_cannot_write_is_written_by_pydantic() -> None:
    # Past 64 bits: no count is, but the bytes must not depend on it.
    event = VisionBatchSubmitted(job_id="j", shard_id="s", attempt=2**70, batch_id="b", lot_ids=("l",))
    envelope = Envelope(event=event, client_id="c", occurred_at=WHEN)
    assert encode(envelope) == _as_pydantic_writes_it(envelope)


# What orjson writes from the fields exactly as pydantic does (a datetime it writes otherwise).
_PLAIN = (str, int, float, bool, type(None), Usage)


def _plain(annotation: Any) -> bool:
    if annotation in _PLAIN:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(value, str) for value in typing.get_args(annotation))
    if origin in (tuple, dict, types.UnionType, typing.Union):
        return all(_plain(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return False


def test_only_events_of_plain_fields_are_written_by_orjson() -> None:
    for event_type in wire.PLAIN_PAYLOADS:
        for name, field in event_type.model_fields.items():
            assert _plain(field.annotation), f"{event_type.__name__}.{name}: {field.annotation}"
            assert field.exclude_if is None and field.serialization_alias is None, name
        decorators = event_type.__pydantic_decorators__
        assert not decorators.field_serializers and not decorators.model_serializers
    for name, field in Usage.model_fields.items():
        assert _plain(field.annotation) and field.exclude_if is None, name


class _BilledUsage(Usage):
    invoice: str = "inv-1"


def test_a_model_holding_more_than_its_fields_is_written_by_pydantic() -> None:
    # A key `model_copy(update=...)` added, and a subclass where the field is declared a `Usage`:
    # pydantic writes the declared fields only, and so must the bytes.
    plain = TranslationCompleted(job_id="j", lot_id="l", descriptions={"en": "<p>x</p>"}, usage=None)
    for event in (plain.model_copy(update={"not_a_field": 1}),
                  plain.model_copy(update={"usage": _BilledUsage(input_tokens=3, output_tokens=4)})):
        envelope = Envelope(event=event, client_id="c", occurred_at=WHEN)
        assert encode(envelope) == _as_pydantic_writes_it(envelope)
