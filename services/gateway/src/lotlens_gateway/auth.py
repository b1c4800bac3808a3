"""Who is calling: HMAC-SHA256 signatures checked with `lotlens_common.signing`.

A client is identified by the configured key that verifies its signature, so no client id
travels with a request. Header-signed requests carry `X-Signature: sha256=<hex>` over the job id
of the path, the raw query string (`GET /api/v1/batch-jobs`) or the raw body
(`POST /api/v1/test-image-validation`). Submissions carry `signature` in the body (or the same
value in `X-Signature`) over the `lots` array (checked while the body is read: `signed_body.py`);
the prefix `sha256=` is optional everywhere.
Missing signature: 401 `MISSING_SIGNATURE`; a signature no key verifies: 403 `INVALID_SIGNATURE`;
both say what that endpoint signs (and the message checked, when it is the client's short input).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lotlens_common import signing
from lotlens_gateway.errors import ApiError

SIGNATURE_HEADER = "X-Signature"


@dataclass(frozen=True)
class Signed:
    """What one endpoint's signature covers, told to a client whose signature is missing or wrong.

    `shown` is the message the server checked, when it is short and the client's own input (a
    job id, a query string); nothing about any key is ever said.
    """

    what: str
    where: str = f"an {SIGNATURE_HEADER} header"
    shown: str | None = None
    note: str | None = None
    # A known mistake the signature was recognised as (a configured key signed that instead).
    signed_instead: str | None = None

    def details(self) -> dict[str, str]:
        """The facts for programs: which header, which format, over what."""
        found = {"signature_location": self.where, "signature_format": FORMAT, "signed_message": self.what}
        if self.shown is not None:
            found["signed_message_here"] = self.shown
        if self.signed_instead is not None:
            found["signed_instead"] = self.signed_instead
        return found

    def sentence(self) -> str:
        """The same in one sentence, with the 1.x difference when there is one."""
        here = f" (here: {self.shown!r})" if self.shown is not None else ""
        instead = f" Your signature is over {self.signed_instead}." if self.signed_instead else ""
        note = f" {self.note}" if self.note else ""
        return (f"Expected in {self.where}: {FORMAT} of {self.what}{here}.{instead}{note} "
                "See docs/MIGRATING.md.")


FORMAT = "`sha256=<hex>`, HMAC-SHA256 with your shared key"
_SHOWN_CHARS = 200


def signs_job(job_id: str) -> Signed:
    """Status, results, download, cancel, retry-failed, webhook deliveries: the path's job id."""
    return Signed("the job id exactly as in the path", shown=job_id[:_SHOWN_CHARS])


def signs_query(query: bytes) -> Signed:
    """`GET /api/v1/batch-jobs`: the raw query string."""
    return Signed("the raw query string exactly as sent, without the `?` (empty when there is none)",
                  shown=query.decode("latin-1")[:_SHOWN_CHARS],
                  note="Generation Service 1.x signed a job id here; 2.0 signs the query string.")


SIGNS_BODY = Signed("the raw request body, byte for byte",
                    note="Generation Service 1.x took this request unsigned; 2.0 signs it.")
SIGNS_LOTS = Signed("the body's `lots` array serialised compactly with sorted keys, as Python's "
                    "json.dumps(lots, separators=(\",\", \":\"), sort_keys=True), or compactly with "
                    "the keys in the body's order, as JavaScript's JSON.stringify(lots)",
                    where=f"the body's `signature` field (or an {SIGNATURE_HEADER} header)")
# Seed 003's JavaScript client signs `JSON.stringify(lots, Object.keys(lots).sort())`: an array as
# the second argument lists the property names to keep, here "0", "1", …, so every lot becomes `{}`
# and the client signs `[{},{}]` whatever its lots hold. Never accepted (one captured signature
# would sign any job of as many lots); recognised, so its integrator reads the fix, not a riddle.
LOTS_SIGNED_EMPTIED = replace(
    SIGNS_LOTS, signed_instead="the `lots` array with every field of every lot dropped (`[{},{},…]`), "
    "as JSON.stringify(lots, Object.keys(lots).sort()) writes it: sign JSON.stringify(lots)")


def lots_emptied(count: int) -> bytes:
    """`[{},{},…]`: the `lots` array of `count` lots with every field dropped (LOTS_SIGNED_EMPTIED)."""
    return b"[" + b",".join([b"{}"] * count) + b"]"


CHALLENGE = 'HMAC-SHA256 realm="lotlens", header="X-Signature"'


def missing_signature(signed: Signed) -> ApiError:
    """401: the request carries no signature; says what to sign."""
    # RFC 9110 11.6.1: a 401 names a challenge; some HTTP stacks treat one without it as an error.
    return ApiError(401, "MISSING_SIGNATURE", f"This request must be signed. {signed.sentence()}",
                    details=signed.details(), headers={"WWW-Authenticate": CHALLENGE})


def invalid_signature(signed: Signed) -> ApiError:
    """403: no client's key verifies the signature; says what should have been signed."""
    return ApiError(403, "INVALID_SIGNATURE", f"Invalid HMAC signature. {signed.sentence()}",
                    details=signed.details())


def _present(signature: object) -> str | None:
    return signature.strip() if isinstance(signature, str) and signature.strip() else None


def signature_sent(signature: str | None, signed: Signed) -> str:
    """The signature, stripped; 401 without one.

    Asked before a request's shape is checked: the contract answers a missing signature 401
    everywhere, and saying so costs nothing (no key is tried, no rate limit used).
    """
    present = _present(signature)
    if present is None:
        raise missing_signature(signed)
    return present


def client_for(keys: signing.Keys, messages: Sequence[bytes], signature: str | None,
               signed: Signed) -> str:
    """The client whose key signed one of `messages`; 401 without a signature, 403 when none matches."""
    present = signature_sent(signature, signed)
    client = signing.identify_client(keys, messages, present)
    if client is None:
        raise invalid_signature(signed)
    return client

