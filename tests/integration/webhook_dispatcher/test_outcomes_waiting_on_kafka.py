"""An attempt's outcome that waits for a broker that does not acknowledge keeps its lease: no other
instance takes the delivery up and sends it again while the first one still records it. The broker
is the dispatcher producer's own librdkafka mock cluster answering nothing within a minute, so each
of the recorder's flushes waits its whole timeout (30 s) and then a readiness ping (2 s)."""

from __future__ import annotations

import time

import pytest

from lotlens_common.clock import utc_now
from lotlens_common.producer import EventProducer
from lotlens_webhook_dispatcher import dispatch_queue as schedule
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    Request,
    client_secret,
    dispatcher_settings,
    insert_finished_job,
    queue_rows,
    receiver,
    running,
)
from tests.mock_kafka import MockKafkaSettings
from tests.polling import wait_for

pytestmark = pytest.mark.integration

# Its leases: 3 timeouts + the margin, 5 s; the recorder's flush waits 32 s.
TIMEOUT_S, MARGIN_S = 1.5, 0.5


def test_outcomes_waiting_on_a_broker_that_does_not_acknowledge_are_not_taken_over_and_sent_again(config, db):
    # The lease covered the POST and a little slack, not the recorder's flushes: an outcome that
    # waited for Kafka past its lease (the flush under way as it arrived, then its own: 64 s, over
    # the lease of any webhook timeout under about 20 s) was taken up by another instance as
    # interrupted and POSTed again while the first instance still recorded it.
    settings = dispatcher_settings(config, new_id("g-"), webhook_timeout_s=TIMEOUT_S,
                                   webhook_lease_margin_s=MARGIN_S)
    # The second answered a second later: its outcome arrives while the first one's flush waits.
    with receiver(lambda request: Reply(200, delay_s=1.0 if request.path == "/late" else 0.0)) as hooks:
        urls = [f"{hooks.url}/early", f"{hooks.url}/late"]
        job_id = insert_finished_job(db, [*urls])
        client_secret(db)
        unacknowledged = EventProducer(MockKafkaSettings(rtt_ms=60_000), "dispatcher")
        with running(settings, db, dispatch_producer=unacknowledged):
            with db.begin() as conn:
                schedule.schedule(conn, job_id, CLIENT, {url: [PartPlan()] for url in urls}, utc_now())
            wait_for(lambda: len(hooks.arrived) == 2, "both webhooks", timeout_s=10)
            # Another instance, its Kafka well, takes up every delivery whose lease runs out.
            with running(dispatcher_settings(config, new_id("g-")), db):
                watched_until = time.monotonic() + 2 * settings.lease_s
                while time.monotonic() < watched_until and len(hooks.arrived) == 2:
                    time.sleep(0.05)
                sent = sorted(_sent(request) for request in hooks.arrived)
                rows = [(row["status"], row["attempt_count"], row["interruptions"])
                        for row in queue_rows(db, job_id)]
    assert sent == [("/early", 1), ("/late", 1)]
    assert rows == [("sending", 1, 0), ("sending", 1, 0)]


def _sent(request: Request) -> tuple[str, int]:
    return request.path, request.attempt
