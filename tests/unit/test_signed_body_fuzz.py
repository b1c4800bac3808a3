"""A bounded fuzz (hypothesis) of body parsing and signature checks before authentication.

Whatever the bytes, reading a submission ends in the body it holds or in an `ApiError` of the
contract (400, 401, 403, 413, and 422 for `lots` that is no array), never in another exception;
what it reads is what `json` reads; a signature verifies for exactly the client whose key made it;
what Python's `json` writes and JSON has not (NaN, Infinity, lone surrogates) is 400
`INVALID_JSON` before any key is tried, and `lots` that is no array is 422 before it too.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lotlens_common.signing import sign, signature_digest
from lotlens_gateway.errors import ApiError
from lotlens_gateway.signed_body import BodyLimits, read_signed

KEYS = {"acme": "acme-key", "other": "other-key"}
LIMITS = BodyLimits(max_lots=20, max_depth=8, max_integer_digits=20, max_field_bytes=4096, max_lot_bytes=4096)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
# Floats and strings as Python's json writes them: NaN, Infinity and lone surrogates included.
python_values = st.recursive(
    st.floats() | st.text(st.characters(blacklist_categories=()), max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=8)
lots_arrays = st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=5)


def read(raw: bytes, header: str | None = None) -> tuple[dict[str, Any], str] | ApiError:
    try:
        return read_signed(raw, KEYS, header, LIMITS)
    except ApiError as error:
        assert error.status in (400, 401, 403, 413, 422), error.body()
        return error


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_end_in_a_body_or_a_contract_error(raw: bytes) -> None:
    read(raw)


@FUZZ
@given(json_values, st.sampled_from(["acme-key", "other-key", "nobody's key"]), st.booleans())
def test_a_json_body_reads_as_json_does_and_verifies_only_for_its_signer(
        lots: Any, key: str, sort_keys: bool) -> None:
    signature = sign(key, json.dumps(lots, separators=(",", ":"), sort_keys=sort_keys).encode())
    raw = json.dumps({"signature": signature, "lots": lots, "version": "1.0.0"}).encode()
    outcome = read(raw)
    if isinstance(outcome, ApiError):
        assert outcome.status in (400, 403, 413, 422)
        assert outcome.status != 403 or key == "nobody's key"
        assert outcome.status != 422 or not isinstance(lots, list), outcome.body()
        return
    # Whoever signed them, an object or a scalar are another request's `lots` (a webhook, an image
    # check): never authenticated.
    assert isinstance(lots, list)
    document, client = outcome
    assert document == json.loads(raw)
    assert client == {"acme-key": "acme", "other-key": "other"}[key]


@FUZZ
@given(lots_arrays, st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_a_corrupted_body_never_verifies_as_another_request(lots: list[Any], at: int, junk: bytes) -> None:
    signature = sign("acme-key", json.dumps(lots, separators=(",", ":"), sort_keys=True).encode())
    raw = json.dumps({"signature": signature, "lots": lots}).encode()
    at = min(at, len(raw))
    corrupted = raw[:at] + junk + raw[at:]
    outcome = read(corrupted)
    if not isinstance(outcome, ApiError):
        document, _ = outcome
        assert document == json.loads(corrupted)  # a body that still parses is the body as sent
        lots_read = document.get("lots")
        sent = document.get("signature")
        assert isinstance(sent, str)
        form = json.dumps(lots_read, separators=(",", ":"), sort_keys=True).encode()
        typed = json.dumps(lots_read, separators=(",", ":")).encode()
        forms = (form, typed, form + b"\n", typed + b"\n")
        expected = {signature_digest(sign(key, message)) for key in KEYS.values() for message in forms}
        assert signature_digest(sent) in expected


@FUZZ
@given(python_values, st.sampled_from(["acme-key", "nobody's key"]))
def test_what_json_has_not_is_invalid_json_whoever_signed_it(lots: Any, key: str) -> None:
    signature = sign(key, json.dumps(lots, separators=(",", ":"), sort_keys=True).encode())
    raw = json.dumps({"signature": signature, "lots": lots}).encode()
    outcome = read(raw)
    try:
        body = orjson.loads(raw)  # how the body is read once authenticated
    except orjson.JSONDecodeError:
        assert isinstance(outcome, ApiError) and outcome.body()["code"] == "INVALID_JSON"
        return
    assert isinstance(outcome, ApiError) or outcome[0] == body
