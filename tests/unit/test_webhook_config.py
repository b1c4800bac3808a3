"""The dispatcher's settings as the deployments set them: environment variables."""

from __future__ import annotations

import pytest

from lotlens_webhook_dispatcher.config import DispatcherSettings


def test_defaults_follow_the_contract():
    settings = DispatcherSettings()
    assert settings.webhook_retry_intervals_s == (30.0, 60.0, 120.0, 240.0)
    assert len(settings.webhook_retry_intervals_s) + 1 == 5  # attempts
    assert settings.webhook_timeout_s == 30.0
    assert settings.webhook_max_payload_bytes == 5 * 1024 * 1024
    assert settings.consumer_group == "lotlens-webhook-dispatcher"


def test_a_client_has_a_quarter_of_the_attempt_slots_unless_set(monkeypatch):
    monkeypatch.setenv("LOTLENS_WEBHOOK_CONCURRENCY", "64")
    assert DispatcherSettings().per_client_concurrency == 16
    monkeypatch.setenv("LOTLENS_WEBHOOK_CONCURRENCY", "3")
    assert DispatcherSettings().per_client_concurrency == 1
    monkeypatch.setenv("LOTLENS_WEBHOOK_PER_CLIENT_CONCURRENCY", "40")
    assert DispatcherSettings().per_client_concurrency == 40
    monkeypatch.setenv("LOTLENS_WEBHOOK_PER_CLIENT_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        DispatcherSettings()


def test_clients_keys_and_schedule_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOTLENS_CLIENTS", '{"acme": "new-key", "globex": "g-key"}')
    monkeypatch.setenv("LOTLENS_WEBHOOK_RETRY_INTERVALS_S", "[0.5, 1, 2, 4]")
    monkeypatch.setenv("LOTLENS_WEBHOOK_TIMEOUT_S", "2")
    monkeypatch.setenv("LOTLENS_WEBHOOK_PER_HOST_CONCURRENCY", "2")
    settings = DispatcherSettings()
    assert settings.shared_key("acme") == "new-key"
    assert settings.shared_key("globex") == "g-key"
    assert settings.shared_key("initech") is None
    assert settings.webhook_retry_intervals_s == (0.5, 1.0, 2.0, 4.0)
    assert settings.lease_s == 3 * 2 + settings.webhook_lease_margin_s
    assert settings.webhook_per_host_concurrency == 2


def test_client_keys_never_show_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("LOTLENS_CLIENTS", '{"acme": "very-secret-key"}')
    assert "very-secret-key" not in repr(DispatcherSettings())


def test_negative_retry_intervals_are_refused(monkeypatch):
    monkeypatch.setenv("LOTLENS_WEBHOOK_RETRY_INTERVALS_S", "[30, -1]")
    with pytest.raises(ValueError, match="negative"):
        DispatcherSettings()
