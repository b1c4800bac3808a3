"""A submission's body read lot by lot, its signature checked before the request is built.

Parsing a whole body first let an unauthenticated 64 MB body of `[{},{},…]` grow the gateway by
2 GB before its 403. Here the top-level object is walked by hand: each lot is decoded alone (the
standard library's C scanner, integers exact and bounded in length), fed to the signature's
HMACs and kept; the array stops at `max_lots + 1`; any other field is measured without building
it (nesting depth bounded) and decoded only when small. So a refused request costs about its own
size, and only an authenticated one is validated further.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lotlens_common import signing
from lotlens_gateway.auth import (
    LOTS_SIGNED_EMPTIED,
    SIGNS_LOTS,
    Signed,
    invalid_signature,
    lots_emptied,
    missing_signature,
)
from lotlens_gateway.body import without_byte_order_mark
from lotlens_gateway.errors import ApiError
from lotlens_gateway.lots_signer import LotsSigner
from lotlens_gateway.validation import no_lots

_SPACE = re.compile(r"[ \t\n\r]*")
# Outside strings only brackets change the depth. A string is skipped whole (its escapes too),
# and with it any strings and other non-brackets that follow: a lot of 50,000 short strings is
# one match, not 50,000 (that made measuring such a lot cost 8 times decoding it). A lone quote
# is a string not closed before the end of the search.
_STRUCTURE = re.compile(r'[\[\]{}]|"(?:[^"\\]++|\\.)*+"(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+|"', re.DOTALL)


@dataclass(frozen=True)
class BodyLimits:
    """What a body may hold before it is even authenticated."""

    max_lots: int
    max_depth: int = 32
    max_integer_digits: int = 32
    # Any top-level field but `lots` (signature, version, languages) is small in a real request.
    max_field_bytes: int = 64 * 1024
    # A lot's JSON: checked before it is decoded in a dense body (see `_DENSE_BYTES`), right after
    # decoding otherwise (before it is serialised for the signature or kept).
    max_lot_bytes: int = 1024 * 1024


# A real body has 40-60 bytes per object or array (a lot, its images); `[{},{},…]` has 3. Below
# this many a body is dense: each lot is measured (slower, building nothing) before it is decoded,
# so one lot of `{}`s cannot grow the gateway either. Above it a lot is decoded from a piece of the
# text no longer than its limit (a dense lot can hide in a sparse body: spaces, a long string).
_DENSE_BYTES = 32
# Likewise strings: a real one (an id, a URL, notes) is 20 bytes and more, `"ab",` is 5.
_DENSE_STRING_BYTES = 12
# Characters encoded at a time when the text around the lots is measured in UTF-8.
_UTF8_SLICE = 1024 * 1024


def bad_json(problem: str, code: str = "INVALID_JSON") -> ApiError:
    """400 for a body that is not the JSON object it must be."""
    return ApiError(400, code, "Request body must be a valid JSON object", details={"problem": problem[:300]})


# The start of a `\u` escape of a surrogate: a pair is valid, a lone one is not (checked only
# where this appears, emoji escaped by `ensure_ascii` among them).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Decoder(json.JSONDecoder):
    """The standard library's reader held to the JSON orjson reads once the body is authenticated:
    no NaN or Infinity and no number past a double (Python's json writes them, JSON has none),
    and no member named twice in an object (I-JSON, RFC 7493: a proxy reading the first `lot_id`
    and LotLens the last would see two requests; about 1.5 us a lot)."""

    def __init__(self, max_digits: int) -> None:
        def bounded_int(digits: str) -> int:
            if len(digits.lstrip("-")) > max_digits:
                raise bad_json(f"an integer has more than {max_digits} digits", "INTEGER_TOO_LONG")
            return int(digits)

        def finite(digits: str) -> float:
            number = float(digits)
            if not math.isfinite(number):
                raise bad_json(f"the number {digits[:40]} is past the range of a double")
            return number

        def no_constant(name: str) -> None:
            raise bad_json(f"{name} is not JSON")

        super().__init__(parse_int=bounded_int, parse_float=finite, parse_constant=no_constant,
                         object_pairs_hook=_unique_members)


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) < len(pairs):
        names = [name for name, _ in pairs]
        twice = next(name for name in names if names.count(name) > 1)
        raise bad_json(f"the member {twice!r} appears twice in an object")
    return members


class _Reader:
    def __init__(self, text: str, limits: BodyLimits, dense: bool) -> None:
        self.text = text
        self.dense = dense
        self.limits = limits
        self.decoder = _Decoder(limits.max_integer_digits)
        self.last_lot = 0  # characters: lots of a body are alike, so the next is read from 2x that

    def space(self, at: int) -> int:
        match = _SPACE.match(self.text, at)
        assert match is not None  # the pattern matches the empty string
        return match.end()

    def expect(self, at: int, char: str) -> int:
        at = self.space(at)
        if self.text[at:at + 1] != char:
            raise bad_json(f"expected {char!r} at character {at}")
        return at + 1

    def decode(self, at: int, size: int | None = None) -> tuple[Any, int] | None:
        """The value at `at` and its end; with `size`, read from the next `size` characters only,
        and None unless it ends before them (it may be cut short, or be no JSON)."""
        try:
            if size is None:
                value, end = self.decoder.raw_decode(self.text, at)
            else:
                try:
                    value, end = self.decoder.raw_decode(self.text[at:at + size])
                except json.JSONDecodeError:
                    return None
                if end == size:  # a number may go on past the piece
                    return None
                end += at
            if _SURROGATE_ESCAPE.search(self.text, at, end):
                json.dumps(value, ensure_ascii=False).encode()  # a lone surrogate cannot be UTF-8
            return value, end
        except UnicodeEncodeError as exc:
            raise bad_json(f"a string holds a lone surrogate: {exc.reason}") from exc
        except json.JSONDecodeError as exc:
            raise bad_json(str(exc)) from exc
        except RecursionError as exc:
            raise bad_json("nested too deeply", "NESTING_TOO_DEEP") from exc
        except ValueError as exc:  # e.g. an integer past the interpreter's digit limit
            raise bad_json(str(exc)) from exc

    def value(self, at: int) -> tuple[Any, int]:
        """The value at `at` and its end, read whole."""
        decoded = self.decode(at)
        assert decoded is not None  # read whole, it is a value or an error
        return decoded

    def measure(self, at: int, max_bytes: int) -> int:
        """The end of the value at `at`, building nothing, or `at + max_bytes + 1` (read no further)
        when it is longer; 400 past the depth limit or when it is not closed."""
        if self.text[at:at + 1] not in ("{", "["):
            return self.value(at)[1]  # a string or a scalar costs about its own size
        bound = min(len(self.text), at + max_bytes + 1)
        depth = 0
        for match in _STRUCTURE.finditer(self.text, at, bound):
            start, end = match.span()
            token = self.text[start]
            if token in "{[":
                depth += 1
                if depth > self.limits.max_depth:
                    raise bad_json(f"nested deeper than {self.limits.max_depth} levels", "NESTING_TOO_DEEP")
            elif token in "}]":
                depth -= 1
                if depth == 0:
                    return end
            elif end - start == 1:  # a string the bound cuts, or one never closed
                break
        if bound < len(self.text):
            return bound
        raise bad_json("unterminated value")

    def field(self, at: int) -> tuple[Any, int]:
        end = self.measure(at, self.limits.max_field_bytes)
        if end - at > self.limits.max_field_bytes:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "A request field other than `lots` is too large",
                           details={"max_field_bytes": self.limits.max_field_bytes})
        return self.value(at)

    def lot(self, at: int, index: int) -> tuple[Any, int]:
        """The lot at `at` and its end; 413 for one over its limit, having built no more than
        the limit's worth of it whatever the body around it holds."""
        limit = self.limits.max_lot_bytes
        if self.dense:
            if self.measure(at, limit) - at > limit:
                raise self.lot_too_large(index)
        elif (read := self.lot_in_pieces(at, index)) is not None:
            return read
        lot, end = self.value(at)
        if end - at > limit:
            raise self.lot_too_large(index, lot.get("lot_id") if isinstance(lot, dict) else None)
        return lot, end

    def lot_in_pieces(self, at: int, index: int) -> tuple[Any, int] | None:
        """The lot at `at` read from a piece of the text that grows to just past the limit, or None
        when it is to be read whole: what is left is shorter than that, or reading it whole costs
        about its own size (see below).

        A sparse body's lots were read whole, and spaces or a long string beside a dense lot made
        its body look sparse: a lot of 12 MiB of `{}` was built (288 MiB, 10 s) before its size
        was seen. Now a lot is copied and decoded about twice over at most.
        """
        limit = self.limits.max_lot_bytes
        size = min(max(2 * self.last_lot, 256), limit + 1)
        while at + size < len(self.text):
            read = self.decode(at, size)
            if read is not None:
                self.last_lot = read[1] - at
                return read
            if size > limit:
                # Over its limit or no JSON. Read whole (to name it by its lot_id, or for the
                # error) when it ends within the limit or the rest of the body holds no more
                # values than a lot within the limit may: one long note. Else refused by position.
                if self.measure(at, limit) - at > limit and self.values_at_most(at) > limit // 3:
                    raise self.lot_too_large(index)
                return None
            size = min(2 * size, limit + 1)
        return None

    def values_at_most(self, at: int) -> int:
        """At most how many elements and members the text from `at` holds: each is the first of
        its container or follows a comma."""
        return sum(self.text.count(mark, at) for mark in ",[{") + 1

    def sign_lots(self, at: int, signer: LotsSigner) -> tuple[int, int]:
        """Feed each lot of the array at `at` to `signer`, keeping none; (lots counted, end)."""
        count = 0
        at = self.space(at + 1)
        if self.text[at:at + 1] == "]":
            return count, at + 1
        while True:
            lot, at = self.lot(at, count)
            if count == self.limits.max_lots:
                raise self.too_many(at)
            try:
                signer.add(lot)
            except RecursionError as exc:
                raise bad_json("nested too deeply", "NESTING_TOO_DEEP") from exc
            count += 1
            at = self.space(at)
            separator = self.text[at:at + 1]
            if separator == "]":
                return count, at + 1
            if separator != ",":
                raise bad_json(f"expected ',' or ']' at character {at}")
            at = self.space(at + 1)

    def lot_too_large(self, index: int, lot_id: object = None) -> ApiError:
        """413 naming the lot whose JSON is over the limit: by id once read, by position before."""
        named = f"Lot {lot_id!r}" if isinstance(lot_id, str) else f"Lot {index} (0-based)"
        details: dict[str, Any] = {"lot_index": index, "max_lot_bytes": self.limits.max_lot_bytes}
        if isinstance(lot_id, str):
            details["lot_id"] = lot_id
        return ApiError(413, "LOT_TOO_LARGE", f"{named} is too large to process", details=details)

    def too_many(self, at: int) -> ApiError:
        """413 with the number of lots, counted on (nothing kept) up to ten times the limit or the
        first lot too large to read (its end unknown)."""
        count, cap = self.limits.max_lots + 1, self.limits.max_lots * 10
        at = self.space(at)
        while self.text[at:at + 1] == "," and count < cap:
            count += 1
            try:  # each lot as the signed ones are read: decoded whole, one was 1.4 GB and 17 s
                _, at = self.lot(self.space(at + 1), count - 1)
            except ApiError as error:
                if error.code != "LOT_TOO_LARGE":
                    raise
                break
            at = self.space(at)
        return ApiError(413, "BATCH_SIZE_EXCEEDED",
                        f"Batch size exceeds maximum limit of {self.limits.max_lots:,} lots",
                        details={"provided_lots": count, "max_allowed": self.limits.max_lots})


def _what_was_signed(keys: signing.Keys, lot_count: int, signatures: Sequence[str]) -> Signed:
    """What a refused submission's 403 says: the contract's forms, and the known mistake when a
    client's key signed its lots with every field dropped.

    Saying so tells nothing secret: only a key's holder makes such a signature (one replayed from
    the wire came with its body), the answer names no client and no key, and the signature stays
    refused.
    """
    emptied = lots_emptied(lot_count)
    if lot_count and any(signing.identify_client(keys, (emptied, emptied + b"\n"), signature)
                         for signature in signatures):
        return LOTS_SIGNED_EMPTIED
    return SIGNS_LOTS


def _utf8_length(text: str, start: int, end: int) -> int:
    """Bytes of `text[start:end]` in UTF-8, encoded a slice at a time (whitespace around the lots
    has no limit: the span may be most of the body)."""
    return sum(len(text[at:min(at + _UTF8_SLICE, end)].encode("utf-8"))
               for at in range(start, end, _UTF8_SLICE))


def read_signed(raw: bytes, keys: signing.Keys, header_signature: str | None,
                limits: BodyLimits) -> tuple[dict[str, Any], str]:
    """The body as a dict and the client whose key signed its `lots`; 400/401/403/413/422 otherwise.

    The lots are read twice: one by one for the signature, keeping nothing (a refused request
    costs about its own size), then, authenticated, as one array by orjson.
    """
    raw = without_byte_order_mark(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_json(f"not UTF-8: {exc}") from exc
    dense = ((raw.count(b"{") + raw.count(b"[")) * _DENSE_BYTES > len(raw)
             or raw.count(b'"') * _DENSE_STRING_BYTES // 2 > len(raw))
    reader, signer = _Reader(text, limits, dense), LotsSigner(keys, sort_keys=True)
    document: dict[str, Any] = {}
    lots_span: tuple[int, int] | None = None
    lot_count = 0
    at = reader.space(reader.expect(0, "{"))
    while text[at:at + 1] != "}":
        if document or lots_span:
            at = reader.space(reader.expect(at, ","))
        if text[at:at + 1] != '"':
            raise bad_json(f"expected a member name at character {at}")
        name, at = reader.value(at)
        if name in document or (name == "lots" and lots_span):  # last-wins would swap the signed lots
            raise bad_json(f"the member {name!r} appears twice")
        at = reader.space(reader.expect(at, ":"))
        if name == "lots" and text[at:at + 1] == "[":
            start = at
            lot_count, at = reader.sign_lots(at, signer)
            lots_span = (start, at)
        else:
            document[name], at = reader.field(at)
        at = reader.space(at)
    at += 1
    if reader.space(at) != len(text):
        raise bad_json(f"extra data at character {reader.space(at)}")
    candidates = [s.strip() for s in (document.get("signature"), header_signature)
                  if isinstance(s, str) and s.strip()]
    if not candidates:
        raise missing_signature(SIGNS_LOTS)  # the contract's 401, whatever else the body lacks
    if lots_span is None:
        # Refused before the signature is checked: one key signs a client's lots, bodies, job ids
        # and every webhook it receives, and `lots` is signed as compact JSON, the very bytes of a
        # webhook or of a JavaScript client's image check. Their X-Signature authenticated
        # `{"lots": <that object>}`, and each replay used up one of the client's batch requests
        # before its 422. Only another request's `lots` is an array: one signed for this endpoint.
        raise no_lots()
    client = signer.client(candidates)
    # The form as typed (keys in the client's order), read once more; then as typed in a UTF-8
    # terminal, text unescaped (004's `echo '[…]' | openssl dgst`).
    for ensure_ascii in (True, False) if not raw.isascii() else (True,):
        if client is None:
            typed = LotsSigner(keys, sort_keys=False, ensure_ascii=ensure_ascii)
            reader.sign_lots(lots_span[0], typed)
            client = typed.client(candidates)
    if client is None:
        raise invalid_signature(_what_was_signed(keys, lot_count, candidates))
    # Parsed from the body's own bytes, the text dropped first: kept beside its lots, the text
    # (2-4 bytes a character once one is past U+00FF: an em dash, Cyrillic) and a slice of it
    # took ~1.5-2.1 GB at the 144 MiB cap. Only the spans around the lots are measured in UTF-8.
    start = _utf8_length(text, 0, lots_span[0])
    end = len(raw) - _utf8_length(text, lots_span[1], len(text))
    del reader, text
    document["lots"] = orjson.loads(memoryview(raw)[start:end])
    return document, client
