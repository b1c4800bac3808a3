"""The recorder stores hand-backs (PostgreSQL alone) apart from outcomes with events (Kafka first),
and keeps the leases of the outcomes waiting to be stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy.exc

from lotlens_common.envelope import Envelope
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher import recorder as recorder_module
from lotlens_webhook_dispatcher.delivery import AttemptOutcome
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.outcomes import RetryPolicy, interrupted, judge, not_started, unready_given_up
from lotlens_webhook_dispatcher.recorder import Outcome, Recorder

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
POLICY = RetryPolicy((30.0, 60.0, 120.0, 240.0), jitter=0.0, retry_after_cap_s=3600)


def _delivery(delivery_id: str, **changes: Any) -> Delivery:
    fields: dict[str, Any] = dict(delivery_id=delivery_id, job_id="job-1", client_id="acme",
                                  webhook_url="https://hooks.example.com/x", part=1, total_parts=1, attempt=1)
    return Delivery(**{**fields, **changes})


def _outcome(delivery: Delivery, verdict: Any) -> Outcome:
    return Outcome(delivery, verdict, [Envelope(event=event, client_id="acme") for event in verdict.events])


def test_a_delivery_given_up_unsent_is_not_grouped_with_the_hand_backs_while_kafka_is_down() -> None:
    # Given up unsent, a delivery is not spent but has a WebhookFailed to publish: grouped with the
    # hand-backs, the Kafka outage that held its event held them too (`sending` the whole outage).
    recorder = Recorder(None, None, "topic", 120.0, lambda: NOW, lambda _: None)  # type: ignore[arg-type]
    groups: list[list[str]] = []

    def record(group: list[Outcome]) -> bool:
        groups.append([outcome.delivery.delivery_id for outcome in group])
        return not any(outcome.envelopes for outcome in group)  # Kafka is down

    recorder._record = record  # type: ignore[method-assign]
    given_up = _outcome(_delivery("given-up"), unready_given_up(_delivery("given-up"), "no key", NOW))
    handed_back = _outcome(_delivery("handed-back"), not_started(NOW, POLICY))
    assert not given_up.verdict.spent and given_up.envelopes and not handed_back.envelopes

    left = recorder._store([given_up, handed_back])

    assert groups == [["handed-back"], ["given-up"]]
    assert left == [given_up]


class _PoolTimedOut:
    """An engine whose pool never hands out a connection: every connection stays busy past the
    pool's wait (PostgreSQL stalled, a failover's statements hanging until the TCP timeout)."""

    def __init__(self) -> None:
        self.checkouts = 0
        self.tried_again = threading.Event()

    def begin(self) -> Any:
        self.checkouts += 1
        if self.checkouts >= 4:  # a store and a renewal, then the next store: tried again
            self.tried_again.set()
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 20 overflow 10 reached (test)")


def test_the_recorder_outlives_a_pool_timeout_and_tries_again() -> None:
    # sqlalchemy.exc.TimeoutError is no DBAPIError: the renewal of the unstored outcomes' leases
    # let it through, the recorder thread died unwatched, and the outcomes were never stored.
    engine = _PoolTimedOut()
    recorder = Recorder(engine, None, "topic", 120.0, lambda: NOW, lambda _: None)  # type: ignore[arg-type]
    recorder.finish(_delivery("handed-back"), not_started(NOW, POLICY))
    attempts_done = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(attempts_done,), daemon=True)
    thread.start()
    try:
        engine.tried_again.wait(30)
        assert thread.is_alive(), f"the recorder thread died after {engine.checkouts} pool timeouts"
        assert engine.tried_again.is_set()
    finally:
        attempts_done.set()
        thread.join(30)
    assert not thread.is_alive()


def test_an_interruption_recorded_by_two_instances_carries_one_event_id() -> None:
    # Every claim of the delivery records it until one has published it: with an id of its own
    # each time, subscribers (deduplicating by event id) counted one interruption per claim.
    delivery = _delivery("interrupted", attempt=3, interruptions=1, unpublished=((2, NOW),))
    verdict = interrupted(delivery, NOW)
    assert verdict is not None and verdict.record_only
    ids = []
    for _instance in range(2):
        recorder = Recorder(None, None, "topic", 120.0, lambda: NOW, lambda _: None)  # type: ignore[arg-type]
        recorder.finish(delivery, verdict)
        recorder.finish(delivery, verdict)  # claimed again, handed back again
        queued = [recorder._finished.get_nowait() for _ in range(recorder._finished.qsize())]
        assert len(queued) == 1 and recorder.interruptions_waiting() == 1
        ids += [envelope.event_id for envelope in queued[0].envelopes]
    assert len(ids) == 2 and len(set(ids)) == 1


class _Transactions:
    """An engine whose transactions are no-ops."""

    @contextmanager
    def begin(self) -> Iterator[None]:
        yield None


def test_outcomes_waiting_a_third_of_a_lease_have_it_renewed_but_not_an_interruptions_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The recorder's own thread may wait on Kafka (a flush under way, then its own) longer than a
    # lease: the claim loop keeps the waiting outcomes' leases, or another instance sent them again.
    clock = [0.0]
    renewed: list[str] = []
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    def renew(_conn: None, delivery: Delivery, _now: datetime, lease_s: float) -> bool:
        renewed.append(f"{delivery.delivery_id} {lease_s:g}")
        return True

    monkeypatch.setattr(dispatch_queue, "renew", renew)
    recorder = Recorder(_Transactions(), None, "topic", 90.0, lambda: NOW, lambda _: None)  # type: ignore[arg-type]
    sent = _delivery("sent")
    recorder.finish(sent, judge(sent, AttemptOutcome(True, 5.0, status_code=200), NOW, NOW, POLICY))
    resumed = _delivery("resumed", attempt=3, interruptions=1, unpublished=((2, NOW),))
    record = interrupted(resumed, NOW)
    assert record is not None and record.record_only  # the row is the attempt under way's
    recorder.finish(resumed, record)
    recorder.finish(_delivery("handed-back"), not_started(NOW, POLICY))

    clock[0] = 29.0
    recorder.keep_leases()
    assert renewed == []
    clock[0] = 30.0
    recorder.keep_leases()
    assert renewed == ["sent 90", "handed-back 90"]
    [_sent, _record, handed_back] = [recorder._finished.get_nowait() for _ in range(3)]
    recorder._let_go([handed_back])  # stored
    clock[0] = 60.0
    recorder.keep_leases()
    assert renewed == ["sent 90", "handed-back 90", "sent 90"]
