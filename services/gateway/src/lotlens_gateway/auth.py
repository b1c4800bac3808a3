"""Who is calling: HMAC-SHA256 signatures checked with `lotlens_common.signing`.

A client is identified by the configured key that verifies its signature, so no client id
travels with a request. Header-signed requests carry `X-Signature: sha256=<hex>` over the job id
of the path, the raw query string (`GET /api/v1/batch-jobs`) or the raw body
(`POST /api/v1/test-image-validation`). Submissions carry `signature` in the body (or the same
value in `X-Signature`) over the `lots` array (checked while the body is read: `signed_body.py`);
the prefix `sha256=` is optional everywhere.
Missing signature: 401 `MISSING_SIGNATURE`; a signature no key verifies: 403 `INVALID_SIGNATURE`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lotlens_common import signing
from lotlens_gateway.errors import ApiError

SIGNATURE_HEADER = "X-Signature"


def missing_signature(where: str = f"an {SIGNATURE_HEADER} header") -> ApiError:
    """401: the request carries no signature."""
    return ApiError(401, "MISSING_SIGNATURE", f"An HMAC-SHA256 signature in {where} is required")


def invalid_signature() -> ApiError:
    """403: the signature does not match any client's key."""
    return ApiError(403, "INVALID_SIGNATURE", "Invalid HMAC signature")


def _present(signature: object) -> str | None:
    return signature.strip() if isinstance(signature, str) and signature.strip() else None


def client_for(keys: Mapping[str, str], messages: Sequence[bytes], signature: str | None) -> str:
    """The client whose key signed one of `messages`; 401 without a signature, 403 when none matches."""
    present = _present(signature)
    if present is None:
        raise missing_signature()
    client = signing.identify_client(keys, messages, present)
    if client is None:
        raise invalid_signature()
    return client
