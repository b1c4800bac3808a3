"""What the run paid OpenAI for, read from the stand-in's durable records: no batch left running,
no shard's batch created twice, no lot in two batches of one stage at once (whatever shard the
second batch was made for), and no lot run again once a batch had answered it with a usable 200
asking the same (the stage had its answer: the resend is paid twice)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx2

from lotlens_common.stage.record import JOB_KEY, METADATA_PREFIX, SHARD_KEY, STAGE_KEY

RUNNING_BATCH = {"validating", "in_progress", "finalizing", "cancelling"}
ATTEMPT_KEY = f"{METADATA_PREFIX}attempt"
SHOWN = 10  # lots named per violation list; the count says how many more


@dataclass(frozen=True)
class PaidBatch:
    """A batch as the stand-in keeps it: the Batch object, the custom_ids it was validated with, and
    each executed line's answer by custom_id (`status`, `usable`, `asked`, `tokens`: the stand-in's
    `batch_run.line_answer`)."""

    batch: dict[str, Any]
    custom_ids: list[str]
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def meta(self, *keys: str) -> tuple[str, ...]:
        """The batch's metadata values for these keys (`None` as a string when absent)."""
        return _meta(self.batch, *keys)


@dataclass(frozen=True)
class _Send:
    """One lot's request in one batch: the batch's life and the line's answer (None: not run)."""

    created: float
    ended: float
    batch_id: str
    answer: dict[str, Any] | None


def check_batches(standin_url: str, api_key: str) -> list[str]:
    """Every breach of the spend invariants among the stand-in's batches."""
    return batch_breaches(paid_batches(standin_url, api_key))


def paid_batches(standin_url: str, api_key: str) -> list[PaidBatch]:
    """Every batch the stand-in holds (its list is saved before a create is answered, unlike its
    counters, saved after: a kill in between lost a batch from them), with its requests."""
    found = []
    for batch in _batches(standin_url, api_key):
        answer = httpx2.get(f"{standin_url}/_standin/batches/{batch['id']}/requests", timeout=30)
        answer.raise_for_status()
        record = answer.json()
        found.append(PaidBatch(batch, record["custom_ids"], record.get("answers") or {}))
    return found


def batch_breaches(paid: list[PaidBatch]) -> list[str]:
    """Batches left running, shards given two batches, lots paid for twice."""
    found = [f"batch {p.batch['id']} left {p.batch['status']}" for p in paid
             if p.batch["status"] in RUNNING_BATCH]
    shards = Counter(p.meta(STAGE_KEY, SHARD_KEY, ATTEMPT_KEY) for p in paid)
    found += [f"shard {key} got {n} batches (double spend)" for key, n in shards.items() if n > 1]
    return found + _lots_sent_twice(paid)


def _lots_sent_twice(paid: list[PaidBatch]) -> list[str]:
    """Lots whose request was in two batches of one stage at once (the second created before the
    first ended), or run again after a batch answered it with a usable 200 to the same request. A
    lot sent again after its batch ended without such an answer is the stage's retry (a refused
    image, a failed line, an expired or cancelled batch, an answer cut at its cap), and so is the
    next part of its languages (another request): whatever attempt each batch is labelled with."""
    sent: dict[tuple[str, ...], list[_Send]] = defaultdict(list)
    for p in paid:
        stage, job = p.meta(STAGE_KEY, JOB_KEY)
        created, ended = float(p.batch["created_at"]), _ended_at(p.batch)
        for custom_id in p.custom_ids:
            send = _Send(created, ended, p.batch["id"], p.answers.get(custom_id))
            sent[(stage, job, custom_id)].append(send)
    found: list[str] = []
    for (stage, job, lot), sends in sorted(sent.items()):
        if _overlap([(s.created, s.ended) for s in sends]):
            found.append(f"lot {lot} of job {job} was in {len(sends)} batches at once at the {stage} stage "
                         f"(double spend)")
        elif resent := _resent_after_answer(sends):
            first, again = resent
            found.append(f"lot {lot} of job {job} was sent again at the {stage} stage in batch {again} after "
                         f"batch {first} answered it with a usable 200 (double spend)")
    return found[:SHOWN] + ([f"{len(found) - SHOWN} more lots sent twice"] if len(found) > SHOWN else [])


def _resent_after_answer(sends: list[_Send]) -> tuple[str, str] | None:
    """(the answering batch, the later one) when a line asking the same ran after a usable 200. A
    later line never run (its batch was cancelled or expired first) billed nothing: no spend, and
    what it would have asked is unknown (a translation's next part of languages asks another)."""
    ordered = sorted(sends, key=lambda s: s.created)
    for n, first in enumerate(ordered):
        if first.answer is None or not first.answer.get("usable"):
            continue
        for later in ordered[n + 1:]:
            if later.answer is not None and later.answer.get("asked") == first.answer.get("asked"):
                return first.batch_id, later.batch_id
    return None


def _ended_at(batch: dict[str, Any]) -> float:
    ends = [batch.get(f"{status}_at") for status in ("completed", "failed", "expired", "cancelled")]
    return min((float(end) for end in ends if end is not None), default=math.inf)


def _overlap(lives: list[tuple[float, float]]) -> bool:
    """Whether any two of these batches' lives (created, ended) overlap."""
    ordered = sorted(lives)
    return any(later[0] < earlier[1] for earlier, later in pairwise(ordered))


def _meta(batch: dict[str, Any], *keys: str) -> tuple[str, ...]:
    metadata = batch.get("metadata") or {}
    return tuple(str(metadata.get(key)) for key in keys)


def _batches(standin_url: str, api_key: str) -> Iterator[dict[str, Any]]:
    """Every batch of the stand-in, page by page."""
    after: str | None = None
    while True:
        page = httpx2.get(f"{standin_url}/v1/batches", headers={"Authorization": f"Bearer {api_key}"},
                          timeout=30, params={"limit": 100, **({"after": after} if after else {})}).json()
        yield from page["data"]
        if not page.get("has_more") or not page["data"]:
            return
        after = page["data"][-1]["id"]
