"""One client's image checks on a tarpit must not make another client's working images unreachable.

Every synchronous image check shares the gateway's one guarded HTTP client. Unbounded per client,
a client keeping a few `test-image-validation` requests of tarpit URLs (a host that accepts the
connection and never answers) under way held every connection of the pool; another client's
synchronous lot then queued behind them, its per-image timeout ran out in that queue, and the lot
failed with "none of the lot's images could be fetched".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, running_gateway, until
from tests.integration.sync_support import one_lot
from tests.polling import wait_for
from tests.servers import SilentServer, silent_server
from tests.standin import Standin

pytestmark = pytest.mark.integration

CONNECTIONS, PER_CLIENT = 8, 4
IMAGE_TIMEOUT_S = 1.0
# Client A wants 32 connections of the pool's 8; at the end its checks drain 4 at a time (8 s).
# Without a share per client, B's check waited 2.9 s in line behind 24 of them (3.9 s behind 32).
FLOODS, TARPIT_URLS = 4, 8


@pytest.fixture()
def tarpit() -> Iterator[SilentServer]:
    with silent_server() as server:
        yield server


def image_check(gw: Gateway, urls: list[str], key: str) -> httpx2.Response:
    raw = json.dumps({"urls": urls}).encode()
    headers = {"X-Signature": gw.sign(raw, key), "Content-Type": "application/json"}
    return httpx2.post(f"{gw.url}/api/v1/test-image-validation", content=raw, headers=headers, timeout=120)


@contextmanager
def flood(gw: Gateway, tarpit: SilentServer) -> Iterator[list[Future[int]]]:
    """Client A keeps `FLOODS` image checks of tarpit URLs under way, each sent again as it ends,
    their starts spread over an image's timeout, until the block ends; yields the floods (each
    the number of checks it made)."""
    stop = threading.Event()

    def keep_checking(n: int) -> int:
        time.sleep(n * IMAGE_TIMEOUT_S / FLOODS)
        made = 0
        while not stop.is_set():
            urls = [f"http://127.0.0.1:{tarpit.port}/{n}-{made}-{i}.png" for i in range(TARPIT_URLS)]
            answer = image_check(gw, urls, gw.key)
            assert answer.status_code == 200 and answer.json()["valid_urls"] == [], answer.text
            made += 1
        return made

    with ThreadPoolExecutor(FLOODS) as pool:
        floods = [pool.submit(keep_checking, n) for n in range(FLOODS)]
        try:
            wait_for(lambda: len(tarpit.accepted) >= CONNECTIONS,
                     lambda: f"the tarpit to take {CONNECTIONS} connections (it took {len(tarpit.accepted)})")
            time.sleep(2 * IMAGE_TIMEOUT_S)  # every flood under way
            yield floods
        finally:
            stop.set()


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine, standin: Standin) -> Iterator[Gateway]:
    with running_gateway(settings, engine, model_url=standin.base_url, image_check_timeout_s=IMAGE_TIMEOUT_S,
                         image_check_concurrency=TARPIT_URLS, image_check_connections=CONNECTIONS,
                         image_checks_per_client=PER_CLIENT) as running:
        yield running


def test_a_client_flooding_tarpit_images_leaves_another_clients_lot_and_image_check_their_images(
        gateway: Gateway, tarpit: SilentServer, images: str) -> None:
    working = f"{images}/car.png"
    with flood(gateway, tarpit) as floods:
        answer = gateway.submit(one_lot(images, names=("front.png",)), languages=["en"],
                                key=gateway.other_key)
        asked = time.monotonic()
        checked = image_check(gateway, [working], gateway.other_key)
        # Within its share, not in line behind client A's checks (each holding a place its timeout).
        waited_s = time.monotonic() - asked
        assert not any(f.done() for f in floods), "client A's flood ended before client B was answered"
    assert waited_s < 2 * IMAGE_TIMEOUT_S, f"client B's image check took {waited_s:.1f} s behind client A's"
    assert answer.status_code == 200, answer.text
    lot = answer.json()["lots"][0]
    assert lot["status"] == "completed", json.dumps(lot)
    assert checked.status_code == 200, checked.text
    assert checked.json()["valid_urls"] == [working], checked.json()["reasons"]
    # Client A's checks still end, each tarpit image unreachable within its own timeout.
    assert all(flooding.result(timeout=120) >= 1 for flooding in floods)


def test_image_checks_past_the_clients_synchronous_places_are_refused_at_once(
        settings: ServiceSettings, engine: Engine, tarpit: SilentServer) -> None:
    # The route took no place: a client held as many image checks at once as it liked.
    with running_gateway(settings, engine, image_check_timeout_s=IMAGE_TIMEOUT_S,
                         sync_slots_per_client=1) as gw, ThreadPoolExecutor(1) as pool:
        holding = pool.submit(image_check, gw, [f"http://127.0.0.1:{tarpit.port}/held.png"], gw.key)
        until(lambda: len(tarpit.accepted) >= 1, holding, "the tarpit to take a connection")
        second = image_check(gw, [f"http://127.0.0.1:{tarpit.port}/second.png"], gw.key)
        other = image_check(gw, [f"http://127.0.0.1:{tarpit.port}/other.png"], gw.other_key)
        assert holding.result(timeout=60).status_code == 200
    assert second.status_code == 429, second.text
    assert second.json()["details"]["reason"] == "concurrent_synchronous_lots"
    assert other.status_code == 200, other.text
