"""The SDK signs exactly as the gateway verifies and the v2.0 client signs, and verifies webhooks."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import standardwebhooks

from lotlens_client import signing as sdk
from lotlens_client.models import Lot
from lotlens_common import signing as common
from lotlens_common.webhook_secrets import new_secret
from tests.seeds import seed_client_class, seed_webhook_verifier
from tests.unit.client_support import JOB_ID, KEY, lots

UNICODE_LOTS: list[dict[str, Any]] = [
    {"lot_id": "sync-12345", "additional_info": "2021 BMW X5, повреждение передней части — «airbags»",
     "images": [{"url": "https://example.com/bmw-front.jpg"}], "webhook": "https://hooks.example.com/x"},
    {"images": [], "additional_info": "", "lot_id": "b-2"},
]


@pytest.mark.parametrize("lot_list", [lots(2), UNICODE_LOTS, lots(1)], ids=["batch", "unicode", "one-lot"])
def test_the_body_signature_is_the_contract_form_the_gateway_verifies(lot_list: list[dict[str, Any]]) -> None:
    signature = sdk.sign_lots(KEY, lot_list)
    assert signature == common.sign(KEY, common.lots_messages(lot_list)[0])
    keys = {"acme": KEY, "other": "k2"}
    assert common.identify_client(keys, common.lots_messages(lot_list), signature) == "acme"


def test_the_body_signature_equals_the_v2_clients() -> None:
    seed = seed_client_class()("http://localhost:5000", KEY)
    assert sdk.sign_lots(KEY, UNICODE_LOTS) == seed._generate_signature({"lots": UNICODE_LOTS})
    assert sdk.sign_job(KEY, JOB_ID) == seed._generate_signature(JOB_ID)


def test_a_lot_serialises_to_the_shape_that_is_signed() -> None:
    lot = Lot("b-2", "", ())
    assert lot.to_json() == {"lot_id": "b-2", "additional_info": "", "images": []}
    assert sdk.sign_lots(KEY, [lot.to_json()]) == sdk.sign_lots(KEY, [UNICODE_LOTS[1]])


def test_header_signatures_cover_the_job_id_and_the_raw_query_string() -> None:
    assert sdk.sign_job(KEY, JOB_ID) == common.sign(KEY, JOB_ID.encode())
    assert sdk.sign_query(KEY, "status=completed&limit=5") == common.sign(KEY, b"status=completed&limit=5")
    assert sdk.sign_query(KEY, "") == common.sign(KEY, b"")
    # A known vector, independent of both implementations.
    assert sdk.sign("key", "The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")


SECRET, OLD_SECRET = new_secret(), new_secret()


def webhook(body: bytes, key: str = KEY, timestamp: int | None = None, secrets: tuple[str, ...] = (SECRET,)
            ) -> dict[str, str]:
    """The headers the webhook dispatcher sends with a delivery."""
    sent_at = int(time.time()) if timestamp is None else timestamp
    return common.webhook_headers(key, secrets, "delivery-7f3a", sent_at, body)


BODY = '{"event":"batch_job_completed","job_id":"550e8400","lots":[{"damages":"<p>Ü</p>"}]}'.encode()


def test_a_webhook_signed_by_the_dispatcher_verifies_with_either_scheme() -> None:
    headers = webhook(BODY)
    assert sdk.verify_webhook(BODY, headers["X-Signature"], KEY)
    assert sdk.verify_webhook(BODY, headers["X-Signature"].removeprefix("sha256="), KEY)  # bare hex
    assert sdk.verify_standard_webhook(BODY, headers, SECRET)
    assert sdk.verify_standard_webhook(BODY, {name.upper(): value for name, value in headers.items()}, SECRET)
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers) == orjson.loads(BODY)
    # The v2.0 document's own verifier agrees.
    assert seed_webhook_verifier()(BODY.decode(), headers["X-Signature"], KEY)


def test_a_tampered_body_or_another_key_fails_both_schemes() -> None:
    headers = webhook(BODY)
    tampered = BODY.replace(b"550e8400", b"550e8401")
    assert not sdk.verify_webhook(tampered, headers["X-Signature"], KEY)
    assert not sdk.verify_standard_webhook(tampered, headers, SECRET)
    assert not sdk.verify_webhook(BODY, headers["X-Signature"], "another-key")
    assert not sdk.verify_standard_webhook(BODY, headers, OLD_SECRET)
    # The shared key is not the webhook secret: the SDK says so instead of a bare mismatch.
    with pytest.raises(ValueError, match="whsec_"):
        sdk.verify_standard_webhook(BODY, headers, KEY)
    assert not sdk.verify_webhook(BODY, "", KEY)
    assert not sdk.verify_webhook(BODY, "sha256=not-hex-at-all", KEY)
    # A request without the header (`request.headers.get("X-Signature")`) is a failed check, not
    # an AttributeError out of the receiver.
    assert not sdk.verify_webhook(BODY, None, KEY)


def test_a_body_given_as_text_verifies_as_its_utf_8_bytes_as_the_official_library_does() -> None:
    headers = webhook(BODY)
    assert standardwebhooks.Webhook(SECRET).verify(BODY.decode(), headers) == orjson.loads(BODY)
    assert sdk.verify_standard_webhook(BODY.decode(), headers, SECRET)
    assert sdk.verify_webhook(BODY.decode(), headers["X-Signature"], KEY)


def test_an_old_or_future_timestamp_fails_even_with_a_valid_signature() -> None:
    now = time.time()
    stale = webhook(BODY, timestamp=int(now) - 301)
    future = webhook(BODY, timestamp=int(now) + 301)
    assert not sdk.verify_standard_webhook(BODY, stale, SECRET, now=now)
    assert not sdk.verify_standard_webhook(BODY, future, SECRET, now=now)
    assert sdk.verify_standard_webhook(BODY, stale, SECRET, tolerance_s=600, now=now)
    assert sdk.verify_webhook(BODY, stale["X-Signature"], KEY)  # the 003 scheme has no timestamp


def test_during_a_secret_rotation_the_previous_secret_still_verifies() -> None:
    headers = webhook(BODY, secrets=(SECRET, OLD_SECRET))
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (SECRET, OLD_SECRET):
        assert sdk.verify_standard_webhook(BODY, headers, secret)
        standardwebhooks.Webhook(secret).verify(BODY, headers)
    assert not sdk.verify_standard_webhook(BODY, headers, new_secret())


@pytest.mark.parametrize("broken", [
    {"webhook-id": None}, {"webhook-timestamp": None}, {"webhook-signature": None},
    {"webhook-timestamp": "yesterday"}, {"webhook-signature": "v2,whatever"},
])
def test_missing_or_malformed_standard_headers_fail(broken: dict[str, str | None]) -> None:
    headers: dict[str, str] = {}
    for name, value in {**webhook(BODY), **broken}.items():
        if value is not None:
            headers[name] = value
    assert not sdk.verify_standard_webhook(BODY, headers, SECRET)


def test_the_standard_signature_matches_the_dispatchers() -> None:
    assert sdk.standard_signature(SECRET, "msg_1", 1700000000, BODY) == common.standard_webhook_signature(
        SECRET, "msg_1", 1700000000, BODY)
    # The official library's signer agrees (its `sign` takes the body as text).
    sent_at = datetime.fromtimestamp(1700000000, UTC)
    assert standardwebhooks.Webhook(SECRET).sign("msg_1", sent_at, BODY.decode()) == sdk.standard_signature(
        SECRET, "msg_1", 1700000000, BODY)


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(sdk.webhook_secret_bytes(secret)) == 32
    assert secret != new_secret()
