"""What an image counts toward a batch's enqueued tokens, per model family.

From OpenAI's Images and vision guide ("Calculating costs"); the stand-in keeps its own copy, so
the project's estimate (`stage/core/image_tokens.py`) is checked against it, not against itself.
A batch is admitted before any image is fetched, so each image counts the most it can cost at
its `detail`:

- patch models: 32 × 32 px patches, at most 1,536, times the model's multiplier (any detail).
- tile models: a base plus so much per 512 px tile; at high or auto detail an image is fitted in
  2048 × 2048, its short side scaled to 768 px, so at most 2 × 4 tiles; at low detail the base.

A flat 85 per image (low detail on gpt-4o) let a 2-image o4-mini request count 530 tokens where
OpenAI counts about 5,600: the stand-in's enqueued-token limit never bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

MOST_PATCHES = 1_536
# Model name prefix -> tokens per patch (the longest matching prefix wins).
PATCH_MULTIPLIERS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72,
                     "gpt-5-mini": 1.62, "gpt-5-nano": 2.46}
# Model name prefix -> (base, per tile); any other model: gpt-4o's 85 + 170 per tile.
TILE_COSTS = {"gpt-4o-mini": (2_833, 5_667), "o1": (75, 150), "o3": (75, 150)}
OTHER_TILE_COST = (85, 170)
MOST_TILES = 8


def _family(model: str, prefixes: Mapping[str, object]) -> str | None:
    matching = [prefix for prefix in prefixes if model.startswith(prefix)]
    return max(matching, key=len) if matching else None


@lru_cache(maxsize=256)  # asked for every image of every line validated; the model comes from requests
def image_tokens(model: str, detail: str) -> int:
    """The most input tokens one image costs `model` at `detail`."""
    patch_family = _family(model, PATCH_MULTIPLIERS)
    if patch_family is not None:
        return round(MOST_PATCHES * PATCH_MULTIPLIERS[patch_family])
    tile_family = _family(model, TILE_COSTS)
    base, per_tile = TILE_COSTS[tile_family] if tile_family else OTHER_TILE_COST
    return base if detail == "low" else base + per_tile * MOST_TILES


# Asked for every line validated: a batch's lines hold as many images at the same details, or nearly.
@lru_cache(maxsize=256)
def images_tokens(model: str, details: tuple[str, ...]) -> int:
    """The most input tokens images at these details cost `model`."""
    return sum([image_tokens(model, detail) for detail in details])


def image_details(body: Mapping[str, Any], chat: bool) -> list[str]:
    """The `detail` of each image a request body holds ("auto" when not given)."""
    # One walk over the messages' parts, without a list of them first: a vision line's six parts,
    # 50,000 lines a batch. Chat keeps an image's detail in its `image_url`, Responses in the part.
    kind, messages = ("image_url", body.get("messages")) if chat else ("input_image", body.get("input"))
    details: list[str] = []
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == kind:
                image = part.get("image_url") if chat else part
                details.append(str(image.get("detail") or "auto") if isinstance(image, dict) else "auto")
    return details
