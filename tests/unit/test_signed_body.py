"""Reading a submission before it is authenticated: refusals cost about the body's size, never more."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from lotlens_common.signing import sign
from lotlens_gateway.errors import ApiError
from lotlens_gateway.signed_body import BodyLimits, read_signed

KEYS = {"acme": "acme-key", "other": "other-key"}
LIMITS = BodyLimits(max_lots=50_000)
SIZE = 8 * 1024 * 1024


def signed(lots: Any, key: str = "acme-key", sort_keys: bool = True, **extra: Any) -> bytes:
    form = json.dumps(lots, separators=(",", ":"), sort_keys=sort_keys).encode()
    return json.dumps({"signature": sign(key, form), "lots": lots, **extra}).encode()


def refused(raw: bytes) -> tuple[ApiError, int]:
    """The error reading `raw` raises and the peak memory Python allocated meanwhile."""
    return refused_with(raw, LIMITS)


def refused_with(raw: bytes, limits: BodyLimits) -> tuple[ApiError, int]:
    """The error reading `raw` under `limits` raises and the peak memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as raised:
            read_signed(raw, KEYS, None, limits)
        return raised.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def filled(head: bytes, item: bytes, tail: bytes, size: int = SIZE) -> bytes:
    return head + item * ((size - len(head) - len(tail)) // len(item)) + tail


HEAD = b'{"signature":"sha256=00","lots":['
# The hostile bodies, and the limits they are read under, are 8 MiB and the production limits at a
# quarter of their scale, counts inside a lot too: what a refusal costs is a ratio to the body,
# alike at any scale (checked: the same answers and peaks to 0.01x), and at full scale tracemalloc
# made these cases 40 s, most of it counting 450,000 `{}`s past the lots' limit.
QUARTER = BodyLimits(max_lots=LIMITS.max_lots // 4, max_lot_bytes=LIMITS.max_lot_bytes // 4)
HOSTILE_SIZE = SIZE // 4


def hostile(head: bytes, item: bytes, tail: bytes) -> bytes:
    return filled(head, item, tail, HOSTILE_SIZE)


# A lot of 1.4 MB whose `{"":0}`s build 30 times their size, yet few enough in an 8 MB body that
# the body does not look dense.
DENSE_LOT = b"[" + b'{"":0},' * (SIZE // 40) + b"{}]"
HOSTILE = {
    "empty lots": hostile(HEAD, b"{},", b"{}]}"),
    "one lot of empty objects": hostile(HEAD + b"[", b"{},", b"{}]]}"),
    "long integers as lots": hostile(HEAD, b"1234567890123456789012,", b"1]}"),
    "one lot of long integers": hostile(HEAD + b"[", b"123456789012345678,", b"1]]}"),
    "one lot of short strings": hostile(HEAD + b'["', b'ab","', b'"]]}'),
    "lots of long integers": hostile(HEAD, b"[" + b"12345678901234567890," * (30_000 // 4) + b"1],",
                                     b"[]]}"),
    "lots of short strings": hostile(HEAD, b'["' + b'ab","' * (50_000 // 4) + b'"],', b"[]]}"),
    # A dense lot with a string that starts just inside its size limit and holds closing brackets:
    # measuring must not end the lot at those brackets (and then build all of it).
    "a string the lot's limit cuts": hostile(
        HEAD + b"[" + b"{}," * (QUARTER.max_lot_bytes // 3 - 2) + b'"' + b"]" * 64 + b'",', b"{},", b"{}]]}"),
    "junk in another field": hostile(b'{"signature":"sha256=00","x":[', b"{},", b'{}],"lots":[]}'),
    "deep nesting": HEAD + b"[" * 5000 + b"]" * 5000 + b"]}",
    "deep nesting elsewhere": b'{"signature":"sha256=00","x":' + b"[" * 100 + b"]" * 100 + b',"lots":[]}',
    "a huge integer": HEAD + b"7" * 5000 + b"]}",
    # Past the lots' limit each further lot was decoded whole just to be counted (25x the body).
    "a huge lot past the lots' limit": hostile(HEAD + b"{}," * (QUARTER.max_lots + 1) + b"[", b"{},",
                                               b"{}]]}"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_body_is_refused_for_about_three_times_its_size(name: str) -> None:
    # Before the body was read lot by lot these took 10-30 times their size; now the text (1x)
    # and one lot at a time, at most a lot's limit of it beside the text.
    raw = HOSTILE[name]
    error, peak = refused_with(raw, QUARTER)
    assert error.status in (400, 403, 413), error.body()
    assert peak < 3.5 * len(raw) + QUARTER.max_lot_bytes, f"{name}: {peak / len(raw):.1f}x the body"


def test_every_accepted_form_of_the_signature_verifies_and_a_wrong_one_does_not() -> None:
    lots = [{"lot_id": "b", "images": [{"url": "https://x.example/1.jpg"}], "n": 18446744073709551616}]
    assert read_signed(signed(lots), KEYS, None, LIMITS)[1] == "acme"
    assert read_signed(signed(lots, "other-key", sort_keys=False), KEYS, None, LIMITS)[1] == "other"
    newline = sign("acme-key", json.dumps(lots, separators=(",", ":"), sort_keys=True).encode() + b"\n")
    raw = json.dumps({"lots": lots}).encode()
    assert read_signed(raw, KEYS, newline, LIMITS)[1] == "acme"
    with pytest.raises(ApiError) as wrong:
        read_signed(signed(lots, "nobody's"), KEYS, None, LIMITS)
    assert wrong.value.status == 403
    with pytest.raises(ApiError) as missing:
        read_signed(raw, KEYS, None, LIMITS)
    assert missing.value.status == 401


def test_the_004_recipe_signing_the_lots_as_typed_in_utf_8_verifies() -> None:
    # `echo '[…]' | openssl dgst -sha256 -hmac key` signs the bytes as typed: a Russian or German
    # note is raw UTF-8 there, while the forms checked wrote it as \u escapes: 403 for the recipe.
    typed = '[{"lot_id":"curl-ru-1","additional_info":"Повреждение заднего бампера, Kotflügel","images":[]}]'
    body = ('{"lots":' + typed + ',"languages":["ru"]}').encode()
    for signature in (sign("acme-key", typed.encode() + b"\n"), sign("acme-key", typed.encode())):
        assert read_signed(body, KEYS, signature, LIMITS)[1] == "acme"
    with pytest.raises(ApiError) as wrong:
        read_signed(body, KEYS, sign("nobody's", typed.encode() + b"\n"), LIMITS)
    assert wrong.value.status == 403


def test_a_second_lots_member_cannot_replace_the_signed_one() -> None:
    lots = [{"lot_id": "a"}]
    raw = signed(lots)[:-1] + b', "lots": [{"lot_id": "evil"}]}'
    with pytest.raises(ApiError) as raised:
        read_signed(raw, KEYS, None, LIMITS)
    assert raised.value.status == 400


def test_the_document_read_is_the_one_json_would_read() -> None:
    lots = [{"lot_id": f"l{i}", "additional_info": "é\u2028\\\"", "images": []} for i in range(3)]
    raw = signed(lots, languages=["en", "de"], version="1.0.0")
    document, client = read_signed(raw, KEYS, None, LIMITS)
    assert client == "acme" and document == json.loads(raw)


def test_more_lots_than_allowed_is_413_with_their_number() -> None:
    raw = signed([{"lot_id": str(i)} for i in range(12)])
    with pytest.raises(ApiError) as raised:
        read_signed(raw, KEYS, None, BodyLimits(max_lots=10))
    assert raised.value.status == 413 and raised.value.details == {"provided_lots": 12, "max_allowed": 10}


@pytest.mark.parametrize("beside", ["spaces", "a long string"])
def test_a_dense_lot_over_its_limit_in_a_body_that_looks_sparse_is_refused_before_it_is_built(
        beside: str) -> None:
    # Density was judged over the whole body: spaces or a long string beside a dense lot made it
    # look sparse, and the lot was decoded whole before its size was checked (12 MiB of `{}` in
    # 137 MiB: 288 MiB and 10 s). A lot now builds at most its limit's worth, here 64 KiB.
    head = HEAD + DENSE_LOT
    raw = filled(head, b" ", b"]}") if beside == "spaces" else filled(head + b',"', b"x", b'"]}')
    error, peak = refused_with(raw, BodyLimits(max_lots=50_000, max_lot_bytes=64 * 1024))
    assert (error.status, error.code, error.details) == (
        413, "LOT_TOO_LARGE", {"lot_index": 0, "max_lot_bytes": 64 * 1024}), error.body()
    assert peak < 2 * len(raw), f"{peak / len(raw):.1f}x the body"


def test_lots_past_the_limit_are_counted_up_to_the_first_one_too_large_to_read() -> None:
    # Each lot past the limit was decoded whole to be counted, a huge one too: 1.4 GB and 17 s for
    # a 57 MiB body. The count stops at it (its end is not read), the answer stays the same.
    lots = b",".join([b'{"lot_id":"%d"}' % n for n in range(11)] + [DENSE_LOT, b"{}", b"{}"])
    raw = b'{"signature":"sha256=00","lots":[' + lots + b"]}"
    error, _ = refused_with(raw, BodyLimits(max_lots=10))
    assert (error.status, error.code) == (413, "BATCH_SIZE_EXCEEDED"), error.body()
    assert error.details == {"provided_lots": 12, "max_allowed": 10}


def test_a_field_past_its_size_limit_is_refused_as_too_large_whatever_follows() -> None:
    # The whole field was walked before its size was compared with the limit (1.5 s of CPU for
    # the 8 MB "junk in another field" above), so what lay past the limit decided the answer:
    # here a field never closed was a 400 "unterminated value" after reading all of it.
    never_closed = b'{"signature":"sha256=00","x":[' + b"{}," * 100_000
    error, _ = refused(never_closed)
    assert (error.status, error.code) == (413, "PAYLOAD_TOO_LARGE"), error.body()
    assert error.details == {"max_field_bytes": BodyLimits(max_lots=1).max_field_bytes}


@pytest.mark.parametrize("lot", [
    '{"lot_id":"shown-to-a-proxy","lot_id":"signed","images":[]}',
    '{"lot_id":"a","images":[{"url":"https://a.example/1.jpg","url":"https://b.example/2.jpg"}]}',
])
def test_a_member_named_twice_inside_a_lot_is_400_not_last_wins(lot: str) -> None:
    # RFC 8259 leaves duplicate names to the reader and I-JSON (RFC 7493) forbids them: a proxy or
    # WAF reading the first `lot_id` and LotLens the last saw two different requests.
    lots = f"[{lot}]"
    form = json.dumps(json.loads(lots), separators=(",", ":"), sort_keys=True).encode()
    raw = f'{{"signature":"{sign("acme-key", form)}","lots":{lots}}}'.encode()
    error, _ = refused(raw)
    assert (error.status, error.code) == (400, "INVALID_JSON")
    assert error.details is not None and "appears twice" in error.details["problem"]


# Raw UTF-8 as JSON.stringify and orjson send it: an em dash or Cyrillic makes the decoded text
# 2 bytes a character, an emoji 4.
NON_ASCII = ("Царапина — задний бампер", "dent 🚗 on the hood", "Kotflügel — links")


def utf8_body(lots: list[dict[str, Any]], **extra: Any) -> bytes:
    form = json.dumps(lots, separators=(",", ":"), sort_keys=True).encode()
    return json.dumps({**extra, "signature": sign("acme-key", form), "lots": lots},
                      ensure_ascii=False).encode()


def test_the_lots_of_a_non_ascii_body_are_the_ones_json_would_read() -> None:
    lots = [{"lot_id": f"лот-{i}", "additional_info": NON_ASCII[i % 3], "images": []} for i in range(9)]
    raw = utf8_body(lots, note="заметка — 🚗 " * 50, languages=["ru"])
    raw = raw[:-1] + ', "after": "— 🚗 после"  \n}'.encode()
    document, client = read_signed(raw, KEYS, None, LIMITS)
    assert client == "acme" and document == json.loads(raw)


def traced_peak(read: Callable[[], Any]) -> int:
    """The peak memory Python allocated while `read` ran beyond what it returned."""
    tracemalloc.start()
    try:
        returned = read()  # held while measured
        kept, peak = tracemalloc.get_traced_memory()
        assert returned
        return peak - kept
    finally:
        tracemalloc.stop()


def test_an_accepted_non_ascii_body_costs_no_more_than_orjson_reading_it() -> None:
    # Only an ASCII body was parsed from its bytes: any other kept its decoded text (2-4 bytes a
    # character) and a full slice of it while orjson parsed, ~1.5-2.1 GB at the 144 MiB cap.
    lots = [{"lot_id": str(i), "additional_info": "x" * 300 + NON_ASCII[i % 3], "images": []}
            for i in range(SIZE // 800)]
    raw = utf8_body(lots, note="🚗")
    orjson_alone = traced_peak(lambda: orjson.loads(raw))
    read = traced_peak(lambda: read_signed(raw, KEYS, None, LIMITS))
    assert read < orjson_alone + 1.5 * len(raw), f"{(read - orjson_alone) / len(raw):.1f}x the body more"
