"""The chaos invariant on webhooks, fed crafted deliveries (signed as the dispatcher signs, checked
with seed 003's verifier): a part never sent, a lot left out or short of a language, and a
cancelled job never told are violations; a whole delivery in parts passes."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from chaos.webhook_check import Finished, webhook_breaches
from tests.seeds import seed_webhook_verifier
from tests.servers import ReceivedWebhook

KEY = "client-key"
LOTS = frozenset({"lot-1", "lot-2", "lot-3"})


def _lot(lot_id: str, status: str = "completed", languages: tuple[str, ...] = ("en", "de")) -> dict[str, Any]:
    return {"lot_id": lot_id, "status": status,
            "descriptions": [{"language": code, "damages": "<p>Dent.</p>"} for code in languages]}


def _hook(job_id: str, lots: list[dict[str, Any]], status: str = "completed", part: int = 1,
          total: int = 1, key: str = KEY) -> ReceivedWebhook:
    doc: dict[str, Any] = {"event": "batch_job_completed", "job_id": job_id, "status": status, "lots": lots}
    if total > 1:
        doc |= {"part": part, "total_parts": total}
    body = json.dumps(doc).encode()
    signature = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return ReceivedWebhook("/ok/tag", {"x-job-id": job_id, "x-signature": signature}, body)


def _breaches(received: list[ReceivedWebhook], status: str = "completed") -> list[str]:
    return webhook_breaches(received, seed_webhook_verifier(), KEY, {"job-1": Finished(status, LOTS, 2)})


def test_a_whole_delivery_in_two_parts_passes() -> None:
    received = [_hook("job-1", [_lot("lot-1"), _lot("lot-2")], part=1, total=2),
                _hook("job-1", [_lot("lot-3")], part=2, total=2)]
    assert _breaches(received) == []


def test_a_part_never_sent_is_a_violation() -> None:
    received = [_hook("job-1", [_lot("lot-1"), _lot("lot-2")], part=1, total=2)]
    assert _breaches(received) == ["job job-1's webhook: parts [2] of 2 never arrived",
                                   "job job-1's webhook: carries 2 of the job's 3 lots (and 0 others)"]


def test_a_lot_short_of_a_language_is_a_violation() -> None:
    received = [_hook("job-1", [_lot("lot-1"), _lot("lot-2"), _lot("lot-3", languages=("en",))])]
    assert _breaches(received) == ["job job-1's webhook: lots ['lot-3'] not completed with 2 descriptions"]


def test_a_cancelled_job_never_told_is_a_violation_and_one_told_passes() -> None:
    assert _breaches([], "cancelled") == ["job job-1's webhook: no verified delivery"]
    told = [_hook("job-1", [_lot("lot-1"), _lot("lot-2", "cancelled"), _lot("lot-3", "cancelled")],
                  status="cancelled")]
    assert _breaches(told, "cancelled") == []


def test_a_delivery_signed_with_another_key_does_not_count() -> None:
    received = [_hook("job-1", [_lot(lot) for lot in sorted(LOTS)], key="someone-else")]
    assert _breaches(received) == ["job job-1's webhook: no verified delivery"]
