"""`LOTLENS_IDEMPOTENCY_LEASE_S` is held above the synchronous budget at start."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from lotlens_gateway.config import GatewaySettings

CLIENTS = {"acme": SecretStr("acme-key-" + "0" * 32)}


def test_a_lease_within_the_synchronous_budget_is_refused_at_start_naming_both_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Set under the sync timeout, a resend took over the key of a synchronous call still running
    # and its lot was described, and paid for, twice.
    monkeypatch.setenv("LOTLENS_IDEMPOTENCY_LEASE_S", "120")
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(clients=CLIENTS)
    message = str(refused.value)
    assert "LOTLENS_IDEMPOTENCY_LEASE_S" in message and "LOTLENS_SYNC_TIMEOUT_S" in message, message


def test_a_lease_without_its_margin_over_the_budget_is_refused() -> None:
    with pytest.raises(ValidationError, match="LOTLENS_SYNC_TIMEOUT_S"):
        GatewaySettings(clients=CLIENTS, sync_timeout_s=290, idempotency_lease_s=295)


def test_a_lease_past_the_budget_and_its_margin_is_kept_and_unset_it_follows_the_budget() -> None:
    kept = GatewaySettings(clients=CLIENTS, sync_timeout_s=20, idempotency_lease_s=60)
    assert kept.idempotency_lease() == 60
    assert GatewaySettings(clients=CLIENTS, sync_timeout_s=100).idempotency_lease() == 160
