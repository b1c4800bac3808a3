"""How many input tokens an image costs, per model family, when its size is not known.

From the Images and vision guide ("Calculating costs"). The stage does not download images, so
every estimate is the most an image can cost at the request's `detail`:

- patch models (gpt-4.1-mini 1.62, gpt-4.1-nano 2.46, o4-mini 1.72, gpt-5-mini 1.62,
  gpt-5-nano 2.46): 32 × 32 px patches, at most 1,536, times the model's multiplier; the worst
  case is 1,536 × multiplier (2,488 for gpt-4.1-mini, 2,642 for o4-mini) at any detail.
- tile models (gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and any model not listed): 85 base + 170 per
  512 px tile, after fitting in 2048 × 2048 and scaling the short side to 768 px; at most
  8 tiles, so 1,445 at high/auto detail, 85 at low.
- o1, o1-pro, o3: 75 base + 150 per tile (1,275 / 75).
- gpt-4o-mini: 2,833 base + 5,667 per tile (48,169 / 2,833).
"""

from __future__ import annotations

import functools

PATCH_CAP = 1_536
# Model name prefix -> multiplier of the patch count (longest prefix wins).
PATCH_MULTIPLIERS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72,
                     "gpt-5-mini": 1.62, "gpt-5-nano": 2.46}
# Model name prefix -> (base tokens, tokens per 512 px tile).
TILE_COSTS = {"gpt-4o-mini": (2_833, 5_667), "o1": (75, 150), "o3": (75, 150)}
DEFAULT_TILE_COST = (85, 170)
# A high-detail image is fitted in 2048 × 2048, then its short side scaled to 768: at most
# 768 × 2048, which 2 × 4 tiles cover.
MAX_TILES = 8


def _by_prefix(model: str, table: dict[str, float] | dict[str, tuple[int, int]]) -> str | None:
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return max(matches, key=len) if matches else None


@functools.cache  # asked for every lot a claim reads (its estimate)
def max_image_tokens(model: str, detail: str) -> int:
    """The most input tokens one image can cost this model at this detail."""
    patch_family = _by_prefix(model, PATCH_MULTIPLIERS)
    if patch_family is not None:
        return round(PATCH_CAP * PATCH_MULTIPLIERS[patch_family])
    tile_family = _by_prefix(model, TILE_COSTS)
    base, per_tile = TILE_COSTS[tile_family] if tile_family else DEFAULT_TILE_COST
    return base if detail == "low" else base + per_tile * MAX_TILES
