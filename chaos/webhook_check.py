"""What a finished job's webhook must have told its receiver: every part of its delivery arrived
validly signed, the parts together carry each of the job's lots, under the job's final status,
and a completed job's lots each completed with every language."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.servers import ReceivedWebhook

Verify = Callable[[str, str, str], bool]  # (raw body, X-Signature, key) -> valid


@dataclass(frozen=True)
class Finished:
    """A job the workload sent, as it ended."""

    status: str  # completed or cancelled
    lot_ids: frozenset[str]
    languages: int


def webhook_breaches(received: Iterable[ReceivedWebhook], verify: Verify, key: str,
                     finished: dict[str, Finished]) -> list[str]:
    """One line per finished job whose webhook deliveries fall short (empty: all arrived whole)."""
    bodies: dict[str, list[dict[str, Any]]] = {}
    for hook in received:
        raw = hook.body.decode("utf-8")
        if verify(raw, hook.headers.get("x-signature", ""), key):
            bodies.setdefault(hook.headers.get("x-job-id", ""), []).append(json.loads(raw))
    found: list[str] = []
    for job_id, job in sorted(finished.items()):
        found += [f"job {job_id}'s webhook: {why}" for why in _short(bodies.get(job_id, []), job)]
    return found


def _short(bodies: list[dict[str, Any]], job: Finished) -> list[str]:
    """How one job's verified bodies (every attempt of every part) fall short of what it owes."""
    if not bodies:
        return ["no verified delivery"]
    found: list[str] = []
    total = max(int(body.get("total_parts", 1)) for body in bodies)
    missing_parts = set(range(1, total + 1)) - {int(body.get("part", 1)) for body in bodies}
    if missing_parts:
        found.append(f"parts {sorted(missing_parts)} of {total} never arrived")
    statuses = {body.get("status") for body in bodies}
    if statuses != {job.status}:
        found.append(f"says {sorted(map(str, statuses))}, the job ended {job.status}")
    lots = {str(lot.get("lot_id")): lot for body in bodies for lot in body.get("lots") or ()}
    if set(lots) != job.lot_ids:
        found.append(f"carries {len(set(lots) & job.lot_ids)} of the job's {len(job.lot_ids)} lots "
                     f"(and {len(set(lots) - job.lot_ids)} others)")
    if job.status == "completed":
        short = sorted(lot_id for lot_id, lot in lots.items() if lot.get("status") != "completed"
                       or len(lot.get("descriptions") or ()) != job.languages)
        if short:
            found.append(f"lots {short[:5]} not completed with {job.languages} descriptions")
    return found
