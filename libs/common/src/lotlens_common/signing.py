"""HMAC-SHA256 signing: client requests in, webhooks out. One module, constant-time compares.

Requests carry `sha256=<hex>` (or bare hex, as the 1.x recipes send). Body-signed requests sign
the `lots` array serialised compactly; the contract's form sorts keys, the 1.x cURL recipe signs
the array as typed (key order kept) and `echo` adds a newline, so those forms are accepted too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from lotlens_common import webhook_secrets

PREFIX = "sha256="
# Who may sign: client id → key, or (client id, key) pairs where a client holds two keys (a
# rotation's overlap: the gateway's `LOTLENS_CLIENT_NEXT_KEYS`).
Keys = Mapping[str, str] | Sequence[tuple[str, str]]


def key_pairs(keys: Keys) -> Iterable[tuple[str, str]]:
    """Each (client id, key) of `keys`."""
    return keys.items() if isinstance(keys, Mapping) else keys


def sign(key: str, message: bytes) -> str:
    """The `sha256=<hex>` signature of a message."""
    return PREFIX + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def _digest(signature: str) -> str:
    value = signature.strip()
    return value[len(PREFIX):] if value.lower().startswith(PREFIX) else value


def signature_digest(signature: str) -> str:
    """The hex digest a signature carries (prefix and case dropped), to compare with an expected one."""
    return _digest(signature).lower()


def verify(key: str, messages: Sequence[bytes], signature: str) -> bool:
    """True when the signature matches any accepted form of the message, in constant time."""
    received = _digest(signature).lower().encode()
    matched = False
    for message in messages:
        expected = hmac.new(key.encode(), message, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, received)
    return matched


def lots_forms(lots: Any) -> Iterator[bytes]:
    """The compact forms of a `lots` array, the contract's (sorted keys) first, each built when asked."""
    yield json.dumps(lots, separators=(",", ":"), sort_keys=True).encode()
    yield json.dumps(lots, separators=(",", ":")).encode()


def lots_messages(lots: Any) -> list[bytes]:
    """The accepted signed forms of a request's `lots` array."""
    forms = list(lots_forms(lots))
    return forms + [form + b"\n" for form in forms]


def identify_client(keys: Keys, messages: Sequence[bytes], signature: str) -> str | None:
    """The client whose key produced the signature, or None; every key is tried, in constant time."""
    found: str | None = None
    for client_id, key in key_pairs(keys):
        if verify(key, messages, signature) and found is None:
            found = client_id
    return found


def standard_webhook_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """A Standard Webhooks `v1,<base64>` signature with a `whsec_` secret over `{id}.{timestamp}.{body}`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_secrets.secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(key: str, secrets: Sequence[str], delivery_id: str, timestamp: int,
                    body: bytes) -> dict[str, str]:
    """Signature headers of an outgoing webhook: `X-Signature` (003) and Standard Webhooks.

    `X-Signature` signs with the shared key (003's verifier). `webhook-signature` lists one
    signature per live `whsec_` secret, space-separated, the current one first (a rotation's overlap).
    """
    headers = {"X-Signature": sign(key, body), "webhook-id": delivery_id, "webhook-timestamp": str(timestamp)}
    if secrets:  # none until the gateway has made the client's secret
        headers["webhook-signature"] = " ".join(
            standard_webhook_signature(secret, delivery_id, timestamp, body) for secret in secrets)
    return headers
