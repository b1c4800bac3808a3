"""Idempotency-Key checks: a key the gateway holds for itself is never one a client can send."""

from __future__ import annotations

import pytest

from lotlens_gateway.errors import ApiError
from lotlens_gateway.idempotency import check_key, internal_key


def test_a_client_key_cannot_name_a_key_the_gateway_holds_for_itself() -> None:
    internal = internal_key("retry-failed", "job-1")
    with pytest.raises(ApiError) as refused:
        check_key(internal)
    assert (refused.value.status, refused.value.code) == (422, "VALIDATION_ERROR")
    assert check_key("retry-failed:job-1") == "retry-failed:job-1"  # the old spelling is a client's
