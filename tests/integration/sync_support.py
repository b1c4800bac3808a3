"""What the synchronous-mode tests share (no tests here): a lot to describe and the model calls made."""

from __future__ import annotations

from typing import Any

from tests.standin import Standin


def model_calls(standin: Standin) -> int:
    """Direct model calls the stand-in answered (or refused) so far."""
    return sum(standin.stats()["direct_calls"].values())


def one_lot(images: str, notes: str = "2019 Toyota Camry, front collision damage",
            names: tuple[str, ...] = ("front.png", "missing-side.png")) -> list[dict[str, Any]]:
    """One lot (synchronous mode) with images of the image host at `images`."""
    return [{"lot_id": "sync-12345", "additional_info": notes,
             "images": [{"url": f"{images}/{name}"} for name in names]}]
