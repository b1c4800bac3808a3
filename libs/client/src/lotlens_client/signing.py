"""HMAC-SHA256 signatures of LotLens requests, and verification of the webhooks it sends.

Requests: `sha256=<hex>` with the client's shared key over
* the `lots` array as `json.dumps(lots, separators=(",", ":"), sort_keys=True)` (submissions),
* the job id exactly as in the path (status, results, download, cancel),
* the raw query string, empty without one (`GET /api/v1/batch-jobs`),
* the raw body (`POST /api/v1/test-image-validation`).

Webhooks carry two signatures over the exact body bytes: `X-Signature: sha256=<hex>` with the
shared key (the v2.0 document's scheme) and Standard Webhooks headers `webhook-id`,
`webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
with the client's webhook secret `whsec_<base64>` (its base64 part decoded is the HMAC key, as in
every Standard Webhooks library); while a secret is rotated the header lists one signature per
live secret, space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

PREFIX = "sha256="
STANDARD_VERSION = "v1"
SECRET_PREFIX = "whsec_"


def _hex(key: str, message: bytes) -> str:
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, message: str | bytes) -> str:
    """`sha256=<hex>` HMAC-SHA256 of a message (a str is signed as UTF-8)."""
    raw = message.encode() if isinstance(message, str) else message
    return PREFIX + _hex(key, raw)


def lots_message(lots: Sequence[Mapping[str, Any]]) -> bytes:
    """The signed form of a submission's `lots` array (compact, keys sorted, ASCII-escaped)."""
    return json.dumps(list(lots), separators=(",", ":"), sort_keys=True).encode()


def sign_lots(key: str, lots: Sequence[Mapping[str, Any]]) -> str:
    """The body `signature` of a submission."""
    return sign(key, lots_message(lots))


def sign_job(key: str, job_id: str) -> str:
    """The `X-Signature` of a request that names a job in its path."""
    return sign(key, job_id)


def sign_query(key: str, query: str) -> str:
    """The `X-Signature` of `GET /api/v1/batch-jobs`: the raw query string, without the `?`."""
    return sign(key, query)


def _strip_prefix(signature: str) -> str:
    value = signature.strip()
    return value[len(PREFIX):] if value.lower().startswith(PREFIX) else value


def verify_webhook(body: bytes | str, signature_header: str | None, key: str) -> bool:
    """True when `X-Signature` (with or without `sha256=`) signs these exact body bytes (text is
    taken as its UTF-8 bytes); False without the header."""
    if signature_header is None:
        return False
    received = _strip_prefix(signature_header).lower().encode()
    return hmac.compare_digest(_hex(key, _bytes(body)).encode(), received)


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def webhook_secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` webhook secret; ValueError for anything else.

    The shared key is not a webhook secret: it verifies `X-Signature` (`verify_webhook`).
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with `whsec_` (ask your LotLens operator for it); "
                         "the shared key verifies X-Signature with verify_webhook")
    return base64.b64decode(secret[len(SECRET_PREFIX):] + "==")


def standard_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `v1,<base64>` signature of a delivery with a `whsec_` secret."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_secret_bytes(secret), signed, hashlib.sha256).digest()
    return f"{STANDARD_VERSION},{base64.b64encode(digest).decode()}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_standard_webhook(body: bytes | str, headers: Mapping[str, str], secret: str,
                            tolerance_s: float = 300, now: float | None = None) -> bool:
    """True when a Standard Webhooks signature by `secret` (`whsec_…`) verifies and the timestamp
    is within `tolerance_s`.

    `headers` may use any case. Every `v1,` signature listed is tried (key rotation); a stale or
    future timestamp fails even with a valid signature, so a captured delivery cannot be replayed.
    """
    delivery_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    listed = _header(headers, "webhook-signature")
    if not delivery_id or not timestamp or not listed:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    expected = standard_signature(secret, delivery_id, sent_at, _bytes(body)).encode()
    matched = False
    for candidate in listed.split():
        version, _, _ = candidate.partition(",")
        if version == STANDARD_VERSION:
            matched |= hmac.compare_digest(expected, candidate.encode())
    return matched
