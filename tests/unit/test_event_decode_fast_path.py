"""`decode` without copies of orjson's dicts, `model_validate`'s wrapper or the frozen dataclass's
`__init__` reads every message as the former decoding did: the same envelope, or the same
`UndecodableEvent` (`FutureEvent`) with the same message, over random valid and broken messages."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import orjson
import pytest

from lotlens_common.envelope import (
    UPCASTERS,
    Envelope,
    FutureEvent,
    UndecodableEvent,
    decode,
    encode,
)
from lotlens_common.events import (
    EVENT_TYPES,
    Event,
    JobCancelled,
    JobCompleted,
    LotSubmitted,
    TranslationCompleted,
    VisionCompleted,
    WebhookAttempted,
)
from lotlens_common.model.usage import Usage


def _former_decode(raw: bytes) -> Envelope:
    """`decode` as it was before the fast path (the reference)."""
    try:
        doc = orjson.loads(raw)
        event_type, version, data = doc["type"], doc["version"], dict(doc["data"])
        if not isinstance(event_type, str) or not isinstance(version, int):
            raise TypeError(f"type {event_type!r} and version {version!r} are not a name and a number")
        client_id, event_id = str(doc["client_id"]), str(doc["event_id"])
        occurred_at = datetime.fromisoformat(doc["occurred_at"])
        trace = dict(doc.get("trace") or {})
    except Exception as exc:
        raise UndecodableEvent(f"cannot decode event: {exc}") from exc
    event_cls = EVENT_TYPES.get(event_type)
    if event_cls is None:
        raise FutureEvent(f"event type {event_type} (version {version}) is not one this code reads: "
                          "a newer release's")
    if version > event_cls.version:
        raise FutureEvent(f"{event_cls.event_type} version {version} is newer than the "
                          f"version {event_cls.version} this code reads")
    try:
        while version < event_cls.version:
            data = UPCASTERS[(event_cls.event_type, version)](data)
            version += 1
        known = frozenset(event_cls.model_fields)
        if not data.keys() <= known:
            data = {name: value for name, value in data.items() if name in known}
        return Envelope(event=event_cls.model_validate(data), client_id=client_id, event_id=event_id,
                        occurred_at=occurred_at, trace=trace)
    except Exception as exc:
        raise UndecodableEvent(f"cannot decode event: {exc}") from exc


WHEN = "2026-01-01T12:30:15.123456+00:00"
JUNK: list[Any] = [None, 0, -1, 1, 2, 1.5, True, False, "", "x", "\x00", "2026-01-01T00:00:00", "not a date",
                   "LotSubmitted", "vision", [], ["a"], [["job_id", "j"]], [["a", "b", "c"]], {}, {"a": 1},
                   {"traceparent": "00-x"}, {"traceparent": 1}, 10**18, -(10**18)]
KEYS = ("event_id", "type", "version", "occurred_at", "job_id", "client_id", "trace", "data")


def _usage(rng: random.Random) -> Usage | None:
    return rng.choice([None, Usage(input_tokens=rng.randint(0, 10**6), output_tokens=rng.randint(0, 10**4),
                                   estimated_cost_usd=rng.choice([None, rng.random()]), model="m")])


def _event(rng: random.Random) -> Event:
    job, lot = f"job-{rng.randint(0, 99)}", f"lot-{rng.randint(0, 99)}"
    return rng.choice([
        LotSubmitted(job_id=job, lot_id=lot, seq=rng.randint(0, 9), total_lots=10, additional_info="note",
                     image_urls=("http://i/1.png",) * rng.randint(0, 3), languages=("en", "de"),
                     webhook=rng.choice([None, "https://h/"])),
        VisionCompleted(job_id=job, lot_id=lot, english_html="<p>x</p>", languages=("en",), total_lots=3,
                        processed_images=2, missing_images=rng.choice([(), ("http://i/2.png",)]),
                        usage=_usage(rng)),
        TranslationCompleted(job_id=job, lot_id=lot, descriptions={"en": "<p>x</p>", "ru": "<p>ы</p>"},
                             usage=_usage(rng)),
        JobCancelled(job_id=job, cancelled_at=datetime.fromisoformat(WHEN)),
        JobCompleted(job_id=job, status="completed", completed_at=datetime.fromisoformat(WHEN), total_lots=2,
                     processed_lots=2, failed_lots=0),
        WebhookAttempted(job_id=job, delivery_id="d", webhook_url="https://h/", attempt=1,
                         attempted_at=datetime.fromisoformat(WHEN), succeeded=rng.random() < 0.5),
    ])


def _broken(rng: random.Random, doc: dict[str, Any]) -> None:
    """One change a broken producer, a newer release or a hand-written message makes."""
    data = doc.get("data")
    change = rng.randrange(9)
    if change == 0:
        doc.pop(rng.choice(KEYS), None)
    elif change == 1:
        doc[rng.choice(KEYS)] = rng.choice(JUNK)
    elif change == 2 and isinstance(data, dict) and data:
        data.pop(rng.choice(list(data)))
    elif change == 3 and isinstance(data, dict) and data:
        data[rng.choice(list(data))] = rng.choice(JUNK)
    elif change == 4 and isinstance(data, dict):
        data[rng.choice(["added_later", "extra", "job_id"])] = rng.choice(JUNK)  # a newer release's field
    elif change == 5 and isinstance(data, dict):
        doc["data"] = [[name, value] for name, value in data.items()]  # pairs `dict()` accepts
    elif change == 6:
        doc["trace"] = rng.choice([[["traceparent", "00-a"]], "ab", [["a"]], {"traceparent": "00-b"}, [], 0])
    elif change == 7:
        doc["version"] = rng.choice([0, 1, 2, 99, -1, True, "1", 1.0])
    else:
        doc["type"] = rng.choice([*EVENT_TYPES, "NewerEvent", 1, None])


def _message(rng: random.Random) -> bytes:
    envelope = Envelope(event=_event(rng), client_id=rng.choice(["c", "client-é"]),
                        occurred_at=datetime.fromisoformat(WHEN),
                        trace=rng.choice([{}, {"traceparent": "00-abc-def-01"}]))
    raw = encode(envelope)
    roll = rng.random()
    if roll < 0.3:
        return raw
    if roll < 0.9:
        doc = orjson.loads(raw)
        for _ in range(rng.randint(1, 3)):
            _broken(rng, doc)
        return orjson.dumps(doc)
    cut = rng.randrange(len(raw))
    return rng.choice([raw[:cut], raw[:cut] + b"\xff" + raw[cut + 1:], b"", b"null", b"[]", b"\"x\"",
                       b"{}", raw + b"x", b"\xff\xfe"])


def _outcome(read: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        envelope = read(raw)
    except Exception as exc:
        return ("refused", type(exc), str(exc), type(exc.__cause__), str(exc.__cause__))
    # The fields, their order and their types: the event's class and values, a plain dict of trace.
    fields = vars(envelope)
    return ("read", type(envelope), list(fields), fields, type(envelope.event),
            envelope.event.model_dump(), type(envelope.trace))


def test_decode_reads_random_valid_and_broken_messages_as_the_former_decoding() -> None:
    rng = random.Random(14)
    read = refused = 0
    for _ in range(6000):
        raw = _message(rng)
        ours, former = _outcome(decode, raw), _outcome(_former_decode, raw)
        assert ours == former, raw
        read += ours[0] == "read"
        refused += ours[0] == "refused"
    assert read > 1500 and refused > 1500, (read, refused)


def test_a_decoded_envelope_is_the_envelope_encoded() -> None:
    rng = random.Random(7)
    for _ in range(300):
        envelope = Envelope(event=_event(rng), client_id="c", occurred_at=datetime.fromisoformat(WHEN),
                            trace={"traceparent": "00-a"})
        assert decode(encode(envelope)) == envelope


def test_decoding_calls_neither_model_validate_nor_the_envelopes_init(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every consumer decodes each event it reads, 150,000 a 50,000-lot job in the result-store:
    # `model_validate`'s wrapper and the frozen dataclass's `__init__` were a fifth of it.
    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the slow path was taken")

    raw = encode(Envelope(event=_event(random.Random(3)), client_id="c"))
    monkeypatch.setattr(Envelope, "__init__", refused)
    for event_cls in EVENT_TYPES.values():
        monkeypatch.setattr(event_cls, "model_validate", refused)
    assert decode(raw).client_id == "c"
