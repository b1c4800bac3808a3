"""What the run paid OpenAI for, read from the stand-in's durable records: no batch left running,
no shard's batch created twice, and no lot in two batches of one stage at once (whatever shard
the second batch was made for)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import httpx2

from lotlens_common.stage.record import JOB_KEY, METADATA_PREFIX, SHARD_KEY, STAGE_KEY

RUNNING_BATCH = {"validating", "in_progress", "finalizing", "cancelling"}
ATTEMPT_KEY = f"{METADATA_PREFIX}attempt"
SHOWN = 10  # lots named per violation list; the count says how many more


def check_batches(standin_url: str, api_key: str) -> list[str]:
    """Every batch the stand-in holds (its list is saved before a create is answered, unlike its
    counters, saved after: a kill in between lost a batch from them)."""
    created = list(_batches(standin_url, api_key))
    found = [f"batch {b['id']} left {b['status']}" for b in created if b["status"] in RUNNING_BATCH]
    shards = Counter(_meta(b, STAGE_KEY, SHARD_KEY, ATTEMPT_KEY) for b in created)
    found += [f"shard {key} got {n} batches (double spend)" for key, n in shards.items() if n > 1]
    return found + _lots_sent_twice(standin_url, created)


def _lots_sent_twice(standin_url: str, created: list[dict[str, Any]]) -> list[str]:
    """Lots whose request was in two batches of one stage at once: the second created before the
    first ended. A lot sent again after its batch ended is the stage's retry (a refused image, its
    next part of languages, a failed line), whatever attempt each batch is labelled with (the
    highest of its lots'): counted by attempt, such retries were reported as double spends."""
    sent: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
    for batch in created:
        answer = httpx2.get(f"{standin_url}/_standin/batches/{batch['id']}/requests", timeout=30)
        answer.raise_for_status()
        stage, job = _meta(batch, STAGE_KEY, JOB_KEY)
        alive = (float(batch["created_at"]), _ended_at(batch))
        for custom_id in answer.json()["custom_ids"]:
            sent[(stage, job, custom_id)].append(alive)
    twice = sorted(key for key, lives in sent.items() if _overlap(lives))
    return [f"lot {lot} of job {job} was in {len(sent[(stage, job, lot)])} batches at once at the {stage} "
            f"stage (double spend)" for stage, job, lot in twice[:SHOWN]] + (
        [f"{len(twice) - SHOWN} more lots sent twice"] if len(twice) > SHOWN else [])


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
