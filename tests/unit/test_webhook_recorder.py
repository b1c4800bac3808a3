"""The recorder stores hand-backs (PostgreSQL alone) apart from outcomes with events (Kafka first)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import sqlalchemy.exc

from lotlens_common.envelope import Envelope
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.outcomes import RetryPolicy, interrupted, not_started, unready_given_up
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
