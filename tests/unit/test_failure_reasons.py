"""A lot's failure reason reaches PostgreSQL's jsonb, which cannot hold U+0000: a model refusal
with a NUL in it made its LotFailed unprojectable, dead-lettered, and its job never finished."""

from __future__ import annotations

import orjson

from lotlens_common.envelope import Envelope, decode, encode
from lotlens_common.events import LotFailed
from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.response_text import response_output_text


def refusal(text: str) -> dict[str, object]:
    return {"output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "refusal", "refusal": text}]}]}


def test_a_refusal_with_a_nul_fails_the_lot_with_a_reason_postgresql_can_store() -> None:
    try:
        response_output_text(refusal("I can\x00not help with that"))
    except ModelOutputError as exc:
        failed = LotFailed(job_id="j", lot_id="l", stage="translation", reason=str(exc))
    assert "\x00" not in failed.reason and "cannot help" in failed.reason.replace("can not", "cannot")
    assert b"\\u0000" not in orjson.dumps(failed.model_dump())


def test_a_recorded_reason_with_a_nul_is_read_without_it() -> None:
    """Events already in the log are projected again by a rebuild."""
    raw = encode(Envelope(LotFailed(job_id="j", lot_id="l", stage="vision", reason="ok"), client_id="c"))
    recorded = raw.replace(b'"reason":"ok"', b'"reason":"bad\\u0000byte"')
    assert recorded != raw
    event = decode(recorded).event
    assert isinstance(event, LotFailed) and event.reason == "badbyte"


def test_a_refusal_is_quoted_without_control_characters() -> None:
    """The synchronous answer carries the reason too, and is kept as jsonb under its
    Idempotency-Key: a NUL there failed the request."""
    try:
        response_output_text(refusal("no\x00pe\x01 \ud800here"))
    except ModelOutputError as exc:
        reason = str(exc)
    assert reason == "the model refused: nope \ufffdhere"
