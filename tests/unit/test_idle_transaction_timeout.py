"""`DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS` ends a silent replica's transaction, never one waiting
for Kafka between its statements: a value under those waits is refused at start."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from lotlens_common.settings import DatabaseSettings, ServiceSettings
from lotlens_gateway.config import GatewaySettings

CLIENTS = {"acme": SecretStr("acme-key-" + "0" * 32)}


def test_services_end_transactions_idle_for_a_minute_and_admin_sessions_are_left_alone() -> None:
    database = DatabaseSettings()
    assert database.worker_limits()["idle_in_transaction_session_timeout"] == 60_000
    assert database.request_limits()["idle_in_transaction_session_timeout"] == 60_000
    assert "idle_in_transaction_session_timeout" not in database.admin_limits()


def test_a_timeout_under_the_result_stores_wait_for_kafka_is_refused_at_start_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Its announcement waits up to 30 s for Kafka inside its transaction: ended there every time
    # Kafka is slow, no job would be announced until Kafka was fast again.
    monkeypatch.setenv("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "20000")
    with pytest.raises(ValidationError) as refused:
        ServiceSettings()
    message = str(refused.value)
    assert "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS (20000) must be 0 or at least 42000" in message, message


def test_no_timeout_and_one_past_the_waits_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    for kept in (0, 42_000):
        monkeypatch.setenv("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", str(kept))
        assert ServiceSettings().database.idle_in_transaction_timeout_ms == kept


def test_a_relay_wait_for_kafka_past_the_timeout_is_refused_at_start_naming_both_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Ended inside its wait, a relay round never marks what it published: sent again every round.
    monkeypatch.setenv("LOTLENS_OUTBOX_PUBLISH_TIMEOUT_S", "55")
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(clients=CLIENTS)
    message = str(refused.value)
    assert "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS (60000) must be 0 or at least 67000" in message, message
    assert "LOTLENS_OUTBOX_PUBLISH_TIMEOUT_S" in message, message
    monkeypatch.setenv("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "70000")
    assert GatewaySettings(clients=CLIENTS).outbox_publish_timeout_s == 55
