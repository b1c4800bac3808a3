"""The context window: a request whose input the model cannot hold is refused, as OpenAI does.

The Responses API's `truncation` (openapi.yaml): "`disabled` (default): If the input size will
exceed the context window size for a model, the request will fail with a 400 error." The error is
OpenAI's `context_length_exceeded` (its message as the API sends it, for each endpoint).

An image counts what the Images and vision guide ("Calculating costs") says it costs the model.
The stand-in never downloads an image, so it counts each at the most its `detail` can cost: what
a photo of 1,254 px square or more costs (auction photos are), the guide's patches capped at 1,536.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lotlens_openai_standin.api_errors import bad_request
from lotlens_openai_standin.models import model_facts

_PATCH_CAP = 1_536
# Patch models: the multiplier of the patch count (longest name prefix wins).
_PATCH_MULTIPLIERS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72, "gpt-5-mini": 1.62,
                      "gpt-5-nano": 2.46}
# Tile models: (base tokens, tokens per 512 px tile); at most 8 tiles (768 × 2048 after scaling).
_TILE_COSTS = {"gpt-4o-mini": (2_833, 5_667), "o1": (75, 150), "o3": (75, 150)}
_DEFAULT_TILE_COST = (85, 170)
_MAX_TILES = 8


def _longest_prefix(model: str, names: Mapping[str, object]) -> str | None:
    matches = [name for name in names if model.startswith(name)]
    return max(matches, key=len) if matches else None


def image_tokens(model: str, detail: str) -> int:
    """The input tokens one large image costs this model at this detail."""
    patch = _longest_prefix(model, _PATCH_MULTIPLIERS)
    if patch is not None:
        return round(_PATCH_CAP * _PATCH_MULTIPLIERS[patch])
    tile = _longest_prefix(model, _TILE_COSTS)
    base, per_tile = _TILE_COSTS[tile] if tile else _DEFAULT_TILE_COST
    return base if detail == "low" else base + per_tile * _MAX_TILES


def _image_details(body: Mapping[str, Any], chat: bool) -> list[str]:
    messages = body.get("messages") if chat else body.get("input")
    details: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if chat and part.get("type") == "image_url":
                details.append(str((part.get("image_url") or {}).get("detail") or "auto"))
            elif not chat and part.get("type") == "input_image":
                details.append(str(part.get("detail") or "auto"))
    return details


def input_tokens(body: Mapping[str, Any], chat: bool, text_tokens: int) -> int:
    """The request's input: its text (`text_tokens`, the stand-in's estimate) and its images."""
    model = str(body.get("model"))
    return text_tokens + sum(image_tokens(model, detail) for detail in _image_details(body, chat))


def check_context_window(body: Mapping[str, Any], chat: bool, text_tokens: int) -> None:
    """OpenAI's 400 `context_length_exceeded` when the input is more than the model holds."""
    model = str(body.get("model"))
    facts = model_facts(model)
    if facts is None:
        return
    tokens = input_tokens(body, chat, text_tokens)
    if tokens <= facts.context_window:
        return
    if chat:
        raise bad_request(f"This model's maximum context length is {facts.context_window} tokens. However, "
                          f"your messages resulted in {tokens} tokens. Please reduce the length of the "
                          "messages.", param="messages", code="context_length_exceeded")
    raise bad_request("Your input exceeds the context window of this model. Please adjust your input and "
                      "try again.", param="input", code="context_length_exceeded")
