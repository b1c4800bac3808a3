"""The gateway's Kafka health probe: its admin client has the full client config, and one that
went stale across a broker restart is replaced instead of reporting "unknown" forever."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from lotlens_common.settings import KafkaSettings
from lotlens_gateway import admin_process
from lotlens_gateway.health import GroupState, KafkaProbe
from tests.unit.admin_fakes import InProcess


class Broker:
    """Counts restarts; admin clients created before the last one fail every description, as
    librdkafka's did on a real broker restart (empty error, for minutes)."""

    def __init__(self) -> None:
        self.restarts = 0
        self.clients = 0


class FakeAdmin:
    def __init__(self, broker: Broker) -> None:
        self.broker, self.born = broker, broker.restarts
        broker.clients += 1

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(topics={})

    def describe_consumer_groups(self, names: list[str], **kwargs: Any) -> dict[str, Any]:
        futures: dict[str, Any] = {}
        for name in names:
            future: Future[Any] = Future()
            if self.born == self.broker.restarts:
                future.set_result(SimpleNamespace(state=SimpleNamespace(name="STABLE"), members=[1, 2]))
            else:
                future.set_exception(RuntimeError(""))
            futures[name] = future
        return futures


def test_health_reads_the_groups_again_after_a_broker_restart() -> None:
    broker = Broker()
    probe = KafkaProbe(InProcess(lambda: FakeAdmin(broker)), ["vision"], cache_s=0)
    assert probe.health().groups == {"vision": GroupState("stable", 2)}
    broker.restarts += 1
    assert probe.health().groups == {"vision": GroupState("unknown", 0)}
    assert probe.health().groups == {"vision": GroupState("stable", 2)}, "stuck on a stale admin client"
    assert broker.clients == 2


def test_the_admin_client_gets_the_full_client_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(admin_process, "AdminClient", lambda config: seen.append(config))
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", security_protocol="SASL_SSL",
                          sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password=SecretStr("p"))
    admin_process.kafka_admin(kafka)()
    assert seen == [kafka.client_config()]
    assert seen[0]["sasl.password"] == "p" and seen[0]["security.protocol"] == "SASL_SSL"
