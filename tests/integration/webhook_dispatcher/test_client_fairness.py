"""Fairness between clients: one client's backlog of endpoints that never answer, each on a host
name of its own (so the per-host limit never bites), does not hold every attempt slot."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import httpx2
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import text

from lotlens_common.clock import utc_now
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.dispatch_queue import delivery_id
from lotlens_webhook_dispatcher.guard import GuardedTransport, Resolver
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    KEY,
    Reply,
    client_secret,
    dispatcher_settings,
    insert_finished_job,
    publish_completed,
    receiver,
    running,
)
from tests.polling import wait_for
from tests.servers import silent_server

pytestmark = pytest.mark.integration

FLOODER = "flooder"
CONCURRENCY = 8
TIMEOUT_S = 4.0


def loopback_resolver(*suffixes: str) -> Resolver:
    """getaddrinfo for the dispatcher's guard: names ending in one of `suffixes` (wildcard DNS, as an
    attacker sets it up) and 127.0.0.1 are the loopback address; every other name is unknown."""
    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        if host != "127.0.0.1" and not host.endswith(suffixes):
            raise socket.gaierror(socket.EAI_NONAME, f"not a name these tests know: {host!r}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    return resolve


def test_a_clients_backlog_of_silent_endpoints_does_not_hold_up_another_clients_webhook(config, db):
    # 10 slots' worth of deliveries to endpoints that accept and never answer, one host name each.
    # All slots went to them, earliest due first: the other client's webhook waited for every one
    # of the flood's first attempts (10 rounds of timeouts; 2,500 at the default settings).
    with silent_server() as silent, receiver(lambda _r: Reply(200)) as fast:
        flood = insert_finished_job(db, [f"http://a{n}.flood.test:{silent.port}/hook"
                                         for n in range(10 * CONCURRENCY)] + [None], client_id=FLOODER)
        other = insert_finished_job(db, [f"{fast.url}/hook", None])
        settings = dispatcher_settings(config, new_id("g-"), webhook_concurrency=CONCURRENCY,
                                       webhook_timeout_s=TIMEOUT_S,
                                       clients={CLIENT: SecretStr(KEY), FLOODER: SecretStr("flooder-key")})
        # One transport for all attempt threads here, so room for every slot's connection.
        transport = GuardedTransport(True, httpx2.Limits(max_connections=4 * CONCURRENCY),
                                     resolve=loopback_resolver(".flood.test"))
        publish_completed(config, flood)
        with running(settings, db, transport):
            wait_for(lambda: silent.accepted, "the flood's first attempts under way")
            publish_completed(config, other)
            first_wave_ends = silent.accepted[0] + TIMEOUT_S
            wait_for(lambda: fast.arrived or time.monotonic() > first_wave_ends + 2 * TIMEOUT_S,
                     "the other client's webhook, or two timeouts past the first wave")
            flood_in_flight = REGISTRY.get_sample_value("lotlens_webhook_client_attempts_in_flight",
                                                        {"client": FLOODER})
    assert fast.arrived, (f"the other client's webhook was still waiting {2 * TIMEOUT_S:g} s after the "
                          f"flood's first timeouts; the flood's attempts so far: {len(silent.accepted)}")
    assert fast.arrived[0].at < first_wave_ends, "it waited for a slot the flood held"
    share = settings.per_client_concurrency
    assert 0 < share < CONCURRENCY
    # Before any of them could time out, the flood had its share of the slots and no more.
    assert len([at for at in silent.accepted if at < silent.accepted[0] + TIMEOUT_S / 2]) == share
    assert flood_in_flight == share


def test_a_row_lock_held_on_a_clients_earliest_delivery_does_not_stop_its_later_ones(config, db):
    # Only the chosen candidates were locked (SKIP LOCKED), and the candidates were read without
    # skipping locks: with the client's earliest row held by another session (a claim stalled
    # mid-transaction), the client was chosen that row alone each time and claimed nothing.
    with receiver(lambda _r: Reply(200)) as hooks:
        held_url, next_url = f"{hooks.url}/held", f"{hooks.url}/next"
        job_id = insert_finished_job(db, [held_url, next_url, None])
        client_secret(db)
        now = utc_now()
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, CLIENT, {held_url: [PartPlan()]},
                                    now - timedelta(minutes=1))
            dispatch_queue.schedule(conn, job_id, CLIENT, {next_url: [PartPlan()]}, now)
        settings = dispatcher_settings(config, new_id("g-"), webhook_per_client_concurrency=1)
        with db.connect() as holder, holder.begin():
            holder.execute(text("SELECT 1 FROM dispatch_queue WHERE delivery_id = :id FOR UPDATE"),
                           {"id": delivery_id(job_id, held_url, 1)})
            with running(settings, db):
                wait_for(lambda: hooks.on("/next"), "the next webhook", timeout_s=10)
            assert hooks.on("/held") == []
    assert [r.attempt for r in hooks.on("/next")] == [1]
