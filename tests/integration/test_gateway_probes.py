"""`/health` while a dependency is slow: it shares the gateway's threads with every route, so a
storm of health checks must not hold those threads."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_gateway.config import CONSUMER_GROUPS
from tests.integration.gateway_support import insert_running_job, running_gateway

pytestmark = pytest.mark.integration


class SilentGroupsAdmin:
    """Answers cluster metadata at once but never describes a consumer group, as a broker whose
    group coordinator is slow does: each description waits for the probe's whole timeout."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(topics={})

    def describe_consumer_groups(self, names: list[str], **kwargs: Any) -> dict[str, Any]:
        return {name: Future() for name in names}


def _timed_get(url: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = httpx2.get(url, timeout=60)
    return response, time.monotonic() - started


def test_a_status_poll_answers_at_once_while_sixty_health_checks_wait_on_a_slow_kafka(
        settings: ServiceSettings, engine: Engine) -> None:
    # Each /health once held one of Starlette's 40 threads while queueing for the probe's lock
    # behind a probe of 2 s per consumer group: a status poll waited 7.9 s for a thread.
    with running_gateway(settings, engine, new_admin=SilentGroupsAdmin) as gw:
        job_id = insert_running_job(engine, gw.client_id)
        assert gw.get_job("/api/v1/batch-status/{job_id}", job_id).status_code == 200
        with ThreadPoolExecutor(60) as pool:
            checks = [pool.submit(_timed_get, f"{gw.url}/health") for _ in range(60)]
            time.sleep(0.5)  # every check has arrived and waits on Kafka
            started = time.monotonic()
            poll = gw.get_job("/api/v1/batch-status/{job_id}", job_id)
            polled_in = time.monotonic() - started
            answers = [check.result() for check in checks]
    assert poll.status_code == 200
    slowest = max(seconds for _, seconds in answers)
    unhealthy = sum(response.status_code != 200 for response, _ in answers)
    print(f"status poll: {polled_in:.2f} s; slowest /health: {slowest:.2f} s; {unhealthy} answered 503")
    assert polled_in < 1.0, f"the status poll waited {polled_in:.2f} s for a thread"
    # What /health says is unchanged: Kafka answers, the groups are unknown, the gateway degraded.
    for response, _ in answers:
        body = response.json()
        assert response.status_code == 200 and body["kafka"] == "connected", body
        assert body["status"] == "degraded" and body["background_worker"] == "degraded", body
        unknown = {"state": "unknown", "members": 0}
        assert body["consumer_groups"] == dict.fromkeys(CONSUMER_GROUPS, unknown), body
    # All four groups are awaited together: one probe takes one timeout (2 s), not one per group.
    assert slowest < 5.0, f"a /health call took {slowest:.2f} s"
