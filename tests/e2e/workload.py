"""Lots to submit to an e2e stack and a wait for the webhooks they cause."""

from __future__ import annotations

import time
from typing import Any

from tests.servers import WebhookReceiver


def cars(images: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """Lots in the seed client's `cars_data` shape; the second lot of each has a broken image."""
    return [{
        "lot_id": f"{prefix}-{i}",
        "additional_info": f"Car {i}, front collision",
        "image_urls": [f"{images}/{prefix}-{i}-a.png"]
        + ([f"{images}/{prefix}-{i}-missing.png"] if i == 1 else [f"{images}/{prefix}-{i}-b.png"]),
    } for i in range(count)]


def wait_for_webhook(receiver: WebhookReceiver, seconds: float = 30, count: int = 1) -> None:
    """Until `count` webhooks arrived or `seconds` passed (the caller asserts what arrived)."""
    deadline = time.monotonic() + seconds
    while len(receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.1)
