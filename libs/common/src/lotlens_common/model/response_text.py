"""Reading the assistant's text out of a Responses API body (direct call or batch output line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lotlens_common.model.errors import ModelIncompleteError, ModelOutputError


def response_output_text(body: Mapping[str, Any]) -> str:
    """The joined `output_text` parts of the assistant message; skips reasoning and other items."""
    status = body.get("status")
    if body.get("error"):
        raise ModelOutputError(f"the response failed: {body['error']}")
    if status == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason", "unknown")
        raise ModelIncompleteError(f"the response is incomplete ({reason})", str(reason))
    if status not in (None, "completed"):
        raise ModelOutputError(f"the response has status {status!r}")
    texts: list[str] = []
    refusals: list[str] = []
    for item in body.get("output") or []:
        if not isinstance(item, dict) or item.get("type") != "message" or item.get("role") != "assistant":
            continue
        for part in item.get("content") or []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "output_text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "refusal":
                refusals.append(str(part.get("refusal", "")))
    if refusals and not any(t.strip() for t in texts):
        raise ModelOutputError(f"the model refused: {' '.join(refusals)}")
    text = "".join(texts)
    if not text.strip():
        raise ModelOutputError("the response has no assistant text")
    return text
