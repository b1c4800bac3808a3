"""The relay's `publish_row` reports each row as `publish_encoded` reports its message: delivered,
dropped by a `discard` (sent again, no failure) or failed (a flush raises), with the row's id."""

from __future__ import annotations

import pytest

from lotlens_common import producer as producer_module
from lotlens_common.envelope import encode
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings
from tests.unit.test_producer_discard import LatePurge, _event


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> EventProducer:
    monkeypatch.setattr(producer_module, "Producer", LatePurge)
    return EventProducer(KafkaSettings(), "test")


def _outcomes(producer: EventProducer, discard_before: bool,
              discard_after: bool) -> tuple[list[str], list[str]]:
    """What the callbacks of `publish_encoded` and of `publish_row` (row 7) heard, in that order."""
    encoded: list[str] = []
    rows: list[str] = []
    value = encode(_event())
    if discard_before:
        producer.discard()
    producer.publish_encoded("t", b"job", value, lambda: encoded.append("delivered"),
                             lambda purged: encoded.append("purged" if purged else "failed"))
    producer.publish_row("t", b"job", value, 7, lambda row: rows.append(f"delivered {row}"),
                         lambda row, purged: rows.append(f"{'purged' if purged else 'failed'} {row}"))
    if discard_after:
        producer.discard()
    try:
        producer.flush()
    except PublishError as exc:
        encoded.append(f"flush: {exc.unacknowledged} unacknowledged, {len(exc.refused)} failed")
    return encoded, rows


@pytest.mark.parametrize(("discard_before", "discard_after", "heard"), [
    (False, False, "delivered"), (False, True, "purged"), (True, False, "failed")])
def test_a_row_is_reported_as_its_message_is(producer: EventProducer, discard_before: bool,
                                             discard_after: bool, heard: str) -> None:
    encoded, rows = _outcomes(producer, discard_before, discard_after)
    assert encoded[0] == heard and rows == [f"{heard} 7"]
    # A failure is kept for the flush, the row's as the message's: two of them.
    assert encoded[1:] == (["flush: 0 unacknowledged, 2 failed"] if heard == "failed" else [])


def test_a_row_has_the_headers_of_its_message(producer: EventProducer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[object] = []
    monkeypatch.setattr(LatePurge, "produce", lambda self, topic, on_delivery, **kwargs: sent.append(kwargs))
    value = encode(_event())
    producer.publish_encoded("t", b"job", value)
    producer.publish_row("t", b"job", value, 7, lambda row: None, lambda row, purged: None)
    assert sent[0] == sent[1]
