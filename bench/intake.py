"""Scenario 1, intake: an N-lot request from its first byte to the 201, and the floor of the same body.

Floor = orjson parse of the body + bare confluent-kafka produce of the job's events (envelope
bytes built from plain dicts, same producer settings, acks=all) + COPY of the same envelopes into
a logged table shaped like the outbox (topic, job id, client, type, payload; no index). The gateway's one
durable write per submission is exactly that COPY (its relay produces to Kafka after the 201), so
the floor holds both writes the design really needs, each reported on its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx2
import orjson

from bench import floor
from bench.config import gateway


def submit(client: httpx2.Client, body: bytes) -> tuple[float, dict[str, Any]]:
    """POST the body; (seconds from first byte to the 201, the 201's JSON)."""
    started = time.perf_counter()
    response = client.post(
        f"{gateway()}/api/v1/generate-descriptions",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"submission answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return elapsed, answer


def floor_run(body: bytes, topic: str, conn: Any) -> dict[str, float]:
    """Parse + produce + COPY for the same body; seconds of each part and their total."""
    prod = floor.producer()
    floor.produce_all(prod, topic, b"warm-up", [b"warm-up"])  # warm before the clock, as the gateway's is
    table = floor.fresh_table(
        conn, "floor_outbox (topic text, job_id text, client_id text, event_type text, payload text)",
        durable=True)
    started = time.perf_counter()
    document = orjson.loads(body)
    parsed = time.perf_counter()
    job_id, lots, languages = "floor-" + str(time.time_ns()), document["lots"], document["languages"]
    created = datetime.now(UTC).isoformat()
    head = floor.envelope_bytes(
        "JobSubmitted",
        job_id,
        {
            "job_id": job_id,
            "client_id": "demo",
            "api_version": document["version"],
            "languages": languages,
            "total_lots": len(lots),
            "webhook_urls": [],
            "created_at": created,
            "estimated_completion": created,
        },
    )
    values = [head] + [
        floor.envelope_bytes(
            "LotSubmitted",
            job_id,
            {
                "job_id": job_id,
                "lot_id": lot["lot_id"],
                "seq": seq,
                "total_lots": len(lots),
                "additional_info": lot.get("additional_info", ""),
                "image_urls": [i["url"] for i in lot["images"]],
                "languages": languages,
                "webhook": lot.get("webhook"),
            },
        )
        for seq, lot in enumerate(lots)
    ]
    floor.produce_all(prod, topic, job_id.encode(), values)
    produced = time.perf_counter()
    floor.copy_rows(
        conn,
        table,
        ((topic, job_id, "demo", "LotSubmitted" if seq else "JobSubmitted", value.decode())
         for seq, value in enumerate(values)),
    )
    copied = time.perf_counter()
    return {
        "parse_s": parsed - started,
        "produce_s": produced - parsed,
        "copy_s": copied - produced,
        "total_s": copied - started,
    }
