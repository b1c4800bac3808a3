"""Names the SDK had before resends.py, waits.py and wire.py split them out still import from
their old modules, and mean what they meant."""

from __future__ import annotations

import pytest

from lotlens_client import NetworkError, ValidationError, resends, waits, wire


def test_the_retry_policy_is_still_importable_from_calls() -> None:
    from lotlens_client.calls import RetryPolicy

    assert RetryPolicy is resends.RetryPolicy
    assert RetryPolicy(max_retries=1).delay(429, {"retry-after": "2"}, 0) == 2.0


def test_the_poll_rules_are_still_importable_from_calls() -> None:
    from lotlens_client.calls import MIN_POLL_INTERVAL_S, next_poll, poll_again, poll_interval

    assert MIN_POLL_INTERVAL_S == waits.MIN_POLL_INTERVAL_S
    assert poll_interval(0) == MIN_POLL_INTERVAL_S and next_poll is waits.next_poll
    blip = NetworkError(None, "NETWORK_ERROR", "ConnectError")
    assert poll_again(blip, 10, 5, 60) == 5
    with pytest.raises(NetworkError):  # at the timeout the old signature raised the error itself
        poll_again(blip, 60, 5, 60)
    with pytest.raises(ValidationError):
        poll_again(ValidationError(400, "VALIDATION_ERROR", "bad"), 0, 5, 60)


def test_the_client_module_still_names_its_default_timeout_and_progress_callback() -> None:
    from lotlens_client.client import DEFAULT_TIMEOUT_S, ProgressCallback

    assert DEFAULT_TIMEOUT_S == wire.DEFAULT_TIMEOUT_S == 30.0
    assert ProgressCallback is wire.ProgressCallback


def test_an_unknown_name_of_calls_is_still_an_attribute_error() -> None:
    from lotlens_client import calls

    with pytest.raises(AttributeError):
        _ = calls.NoSuchName
