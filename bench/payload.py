"""Request bodies and signatures, built the way an integrator's client builds them (API.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from lotlens_common.signing import sign

NOTES = (
    "2019 Toyota Camry, front collision",
    "2017 Honda Civic, rear bumper damage",
    "2021 Ford F-150, hail damage on the hood",
    "2015 BMW 3 Series, flood damage, interior",
)


def lots(
    count: int,
    images_per_lot: int,
    image_base: str,
    webhook: Callable[[int], str | None] | None = None,
    pool: int = 0,
) -> list[dict[str, Any]]:
    """`count` lots with distinct lot ids; every image URL distinct (as real lots have) unless `pool`
    is set, then the URLs come from a pool of that many (fresh for each call)."""
    tag = uuid.uuid4().hex[:8]
    made: list[dict[str, Any]] = []
    for i in range(count):
        lot: dict[str, Any] = {
            "lot_id": f"bench-{tag}-{i:06d}",
            "additional_info": NOTES[i % len(NOTES)],
            "images": [
                {"url": _image(image_base, tag, i, j, images_per_lot, pool)} for j in range(images_per_lot)
            ],
        }
        url = webhook(i) if webhook else None
        if url:
            lot["webhook"] = url
        made.append(lot)
    return made


def _image(base: str, tag: str, lot: int, number: int, per_lot: int, pool: int) -> str:
    if pool:
        return f"{base}/pool/{tag}/{(lot * per_lot + number) % pool}.png"
    return f"{base}/lots/{tag}/{lot}/{number}.png"


# The largest lot a real batch carries (README, "Request limits"): an auction's 8-digit lot number,
# a 200-character note, 20 photos (an auction listing's; the contract's synchronous limit) at
# Copart's 104-character photo URLs, and a webhook.
AUCTION_PHOTOS = 20
AUCTION_NOTE_CHARS = 200
AUCTION_WEBHOOK = "https://dealer-portal.example.com/integrations/lotlens/webhook"


def auction_lots(count: int, photos: int = AUCTION_PHOTOS,
                 webhook: str = AUCTION_WEBHOOK) -> list[dict[str, Any]]:
    """`count` lots the size of the largest real ones, every photo URL distinct."""
    note = "2019 Toyota Camry SE, front end damage, airbags deployed, runs and drives. " * 3
    made: list[dict[str, Any]] = []
    for i in range(count):
        digests = (uuid.uuid5(uuid.NAMESPACE_URL, f"{i}/{n}").hex for n in range(photos))
        made.append({
            "lot_id": f"{70_000_000 + i}",
            "additional_info": note[:AUCTION_NOTE_CHARS],
            "images": [{"url": f"https://cs.copart.com/v1/AUTH_svc.pdoc00001/ids-c-prod-lpp/0824/{digest}_ful.jpg"}
                       for digest in digests],
            "webhook": webhook,
        })
    return made


def submission(key: str, lot_list: list[dict[str, Any]], languages: Sequence[str]) -> bytes:
    """The JSON body of `POST /api/v1/generate-descriptions`, body-signed."""
    signed = json.dumps(lot_list, separators=(",", ":"), sort_keys=True).encode()
    return orjson.dumps(
        {"signature": sign(key, signed), "version": "2.0.0", "languages": list(languages), "lots": lot_list}
    )


def job_headers(key: str, job_id: str) -> dict[str, str]:
    """Header signature of a job-addressed request (signed string: the job id)."""
    return {"X-Signature": sign(key, job_id.encode())}
