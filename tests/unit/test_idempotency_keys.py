"""Idempotency-Key checks: a key the gateway holds for itself is never one a client can send."""

from __future__ import annotations

import pytest

from lotlens_gateway.errors import ApiError
from lotlens_gateway.idempotency import check_key, header_signature_hash, internal_key


def test_a_client_key_cannot_name_a_key_the_gateway_holds_for_itself() -> None:
    internal = internal_key("retry-failed", "job-1")
    with pytest.raises(ApiError) as refused:
        check_key(internal)
    assert (refused.value.status, refused.value.code) == (422, "VALIDATION_ERROR")
    assert check_key("retry-failed:job-1") == "retry-failed:job-1"  # the old spelling is a client's


def test_a_header_signature_is_bound_to_its_key_as_the_signature_check_reads_it() -> None:
    # Hashed as sent, a client resending its job with `sha256=<HEX>` instead of bare hex was
    # refused 503 while intake was busy, where a request through a slot is replayed.
    digest = "ab" * 32
    forms = [digest, f"sha256={digest}", f"SHA256={digest.upper()}", f"  sha256={digest} "]
    assert len({header_signature_hash(form) for form in forms}) == 1
    assert header_signature_hash(None) == header_signature_hash("") == header_signature_hash("  ")
    assert header_signature_hash(digest) != header_signature_hash(None)
    assert header_signature_hash(digest) != header_signature_hash("cd" * 32)
