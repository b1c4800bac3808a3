"""The dispatcher through a connection pool whose every connection stays busy past its wait
(PostgreSQL stalled, a failover's statements hanging): the claims and the recorder wait it out,
and a recorder that dies anyway stops the instance instead of leaving it claiming, `/livez` green."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine

from lotlens_common import ops
from lotlens_common.clock import utc_now
from lotlens_common.producer import EventProducer
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.bootstrap import http_transport
from lotlens_webhook_dispatcher.config import DispatcherSettings
from lotlens_webhook_dispatcher.payloads import PartPlan
from lotlens_webhook_dispatcher.worker import Dispatcher, RecorderEnded
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    Request,
    client_secret,
    insert_finished_job,
    quick,
    receiver,
    state,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration

POOL_SIZE = 2


@contextmanager
def dispatching(dispatcher: Dispatcher) -> Iterator[tuple[threading.Thread, list[BaseException]]]:
    """`dispatcher.run` in a thread, stopped on exit: the thread and what ended it."""
    stop, ended = threading.Event(), list[BaseException]()

    def run() -> None:
        try:
            dispatcher.run(stop)
        except BaseException as exc:  # noted for the test, as `run_workers` would log it
            ended.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread, ended
    finally:
        stop.set()
        thread.join(30)


def recorder_alive() -> bool:
    return any(thread.name == "webhook-recorder" for thread in threading.enumerate())


def test_a_pool_busy_past_its_wait_between_a_post_and_its_record_stops_neither_claims_nor_records(
        config, db, caplog):
    # Every connection busy right after the POST: the pool's TimeoutError is no DBAPIError. The
    # claim loop let it through (the deliveries worker died, the process exited), and so did the
    # recorder's lease renewal: its thread died unwatched, the delivered POST was never recorded
    # and another instance sent it again once its lease ran out.
    settings: DispatcherSettings = quick(config)
    small = create_engine(settings.database.database_url, pool_size=POOL_SIZE, max_overflow=0,
                          pool_timeout=0.3)
    held: list[Connection] = []
    first = threading.Event()

    def hold_the_pool(_request: Request) -> Reply:
        if not first.is_set():
            first.set()
            while len(held) < POOL_SIZE:
                with suppress(Exception):  # a dispatcher thread has one a moment: wait for it
                    held.append(small.connect())
        return Reply(200)

    caplog.set_level(logging.WARNING)
    with receiver(hold_the_pool) as hooks:
        url = f"{hooks.url}/busy"
        job_id = insert_finished_job(db, [url])
        client_secret(db)
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
        dispatcher = Dispatcher(small, EventProducer(settings.kafka, "dispatcher"),
                                partial(http_transport, settings), settings)
        with dispatching(dispatcher) as (thread, ended):
            wait_for(lambda: len(held) == POOL_SIZE, "every pooled connection held")

            def failed_records() -> int:
                return sum("attempts failed; trying again" in r.getMessage() for r in caplog.records)

            wait_for(lambda: failed_records() >= 2 or not recorder_alive() or ended,
                     "two failed rounds, or the recorder or the loop ended")
            assert ended == [] and thread.is_alive(), f"the deliveries loop ended: {ended}"
            assert recorder_alive(), "the recorder thread died at the pool's timeout"
            for conn in held:
                conn.close()
            wait_for(lambda: state(db, job_id) == [("delivered", 1, 0)],
                     lambda: f"the delivery delivered (seen: {state(db, job_id)})")
        assert ended == [] and len(hooks.on("/busy")) == 1
    small.dispose()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the defect
def test_a_recorder_that_died_stops_the_claims_and_fails_liveness(config, db, monkeypatch):
    # Unwatched, the claim loop went on beating /livez and claiming until 256 outcomes waited
    # unrecorded (their POSTs out, none recorded), then claimed nothing more, still "alive".
    heartbeats = ops.Heartbeats()
    monkeypatch.setattr(ops, "HEARTBEATS", heartbeats)
    settings: DispatcherSettings = quick(config)
    dispatcher = Dispatcher(db, EventProducer(settings.kafka, "dispatcher"),
                            partial(http_transport, settings), settings)

    def defect(*_args: Any) -> None:
        raise RuntimeError("a defect in the recorder (test)")

    monkeypatch.setattr(dispatcher._recorder, "run", defect)
    with dispatching(dispatcher) as (thread, ended):
        thread.join(30)
        assert not thread.is_alive(), "the claim loop went on with its recorder dead"
    assert [type(exc) for exc in ended] == [RecorderEnded], ended
    assert "deliveries" in heartbeats.stale(ops.STALE_AFTER_S)
