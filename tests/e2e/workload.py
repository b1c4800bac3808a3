"""Lots to submit to an e2e stack."""

from __future__ import annotations

from typing import Any


def cars(images: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """Lots in the seed client's `cars_data` shape; the second lot of each has a broken image."""
    return [{
        "lot_id": f"{prefix}-{i}",
        "additional_info": f"Car {i}, front collision",
        "image_urls": [f"{images}/{prefix}-{i}-a.png"]
        + ([f"{images}/{prefix}-{i}-missing.png"] if i == 1 else [f"{images}/{prefix}-{i}-b.png"]),
    } for i in range(count)]

