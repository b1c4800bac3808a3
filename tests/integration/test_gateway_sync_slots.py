"""Synchronous lots described at once by one gateway: a client past its places hears 429, every
client past the process's 503, both at once and with Retry-After, never a wait for the client's
timeout. A lot is held in its model call by the stand-in's `timeout` fault (it holds the call,
then answers 504, which the gateway asks again)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, running_gateway, until
from tests.integration.sync_support import model_calls, one_lot
from tests.standin import Standin

pytestmark = pytest.mark.integration

HELD_S = 8.0  # how long the stand-in holds the first lot's model call


def held_lot(gw: Gateway, standin: Standin, pool: ThreadPoolExecutor, images: str) -> Future[httpx2.Response]:
    """A synchronous lot of `gw`'s main client, waiting in its model call once this returns."""
    standin.faults(api_faults=[{"scope": "responses", "kind": "timeout", "count": 1, "seconds": HELD_S}])
    holding = pool.submit(gw.submit, one_lot(images), ["en"])
    until(lambda: model_calls(standin) == 1, holding, "the first lot to reach the model")
    return holding


def test_synchronous_lots_past_the_places_are_refused_at_once_with_retry_after(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    # Nothing bounded them: every lot went to OpenAI at once, and past its rate limit they all
    # waited out their retries to fail together, or the client's timeout came first.
    with running_gateway(settings, engine, model_url=standin.base_url, sync_slots=1,
                         sync_slots_per_client=1) as gw, ThreadPoolExecutor(1) as pool:
        holding = held_lot(gw, standin, pool, images)
        own = gw.submit(one_lot(images, notes="the same client's second lot"), languages=["en"])
        other = gw.submit(one_lot(images), languages=["en"], key=gw.other_key)
        assert not holding.done()
        first = holding.result(timeout=60)
        after = gw.submit(one_lot(images), languages=["en"], key=gw.other_key)
        metrics = httpx2.get(f"{gw.ops_url}/metrics").text
    assert own.status_code == 429, own.text
    assert own.json()["details"]["reason"] == "concurrent_synchronous_lots"
    assert own.headers["retry-after"] == "5"
    assert other.status_code == 503, other.text
    assert other.json()["code"] == "SYNCHRONOUS_BUSY" and other.headers["retry-after"] == "5"
    assert first.status_code == 200, first.text
    assert after.status_code == 200, after.text  # the place was given back
    assert model_calls(standin) == 3  # the first lot's two tries and the last lot: no refused lot was sent
    assert 'lotlens_sync_refused_total{reason="client"} 1.0' in metrics
    assert 'lotlens_sync_refused_total{reason="process"} 1.0' in metrics


def test_a_refused_lot_leaves_the_clients_synchronous_rate_limit_untouched(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    # Counted before its place was asked, each 429 would use up one of the client's 100 a minute.
    with running_gateway(settings, engine, model_url=standin.base_url, sync_slots_per_client=1,
                         rate_limit_sync=2) as gw, ThreadPoolExecutor(1) as pool:
        holding = held_lot(gw, standin, pool, images)
        refused = [gw.submit(one_lot(images), languages=["en"]).status_code for _ in range(3)]
        assert holding.result(timeout=60).status_code == 200
        second = gw.submit(one_lot(images), languages=["en"])
    assert refused == [429, 429, 429]
    assert second.status_code == 200, second.text
