"""Scenario 2, pipeline: N lots from the 201 to `completed`, stage by stage, and its floor.

Stage times come from the events' `occurred_at` (read back from the topics after the run), along
the critical path: each stage's figure is "last event of this stage - last event of the previous
one", so the stages add up to JobSubmitted -> JobCompleted.

Floor = the same number of events produced and consumed once per hop by bare confluent-kafka loops
(submissions -> vision -> translation -> result, 4 hops, each event padded to the real events'
mean size), plus COPY of the result rows (one per lot and language).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx2

from bench import floor, kafkautil
from bench.config import gateway
from bench.payload import job_headers

TERMINAL = {"completed", "failed", "cancelled"}
# (label, event type that ends the stage); the first stage starts at JobSubmitted.
STAGES = (
    ("vision submit", "VisionBatchSubmitted"),
    ("vision batch+collect", "VisionCompleted"),
    ("translation submit", "TranslationBatchSubmitted"),
    ("translation batch+collect", "TranslationCompleted"),
    ("projection+JobCompleted", "JobCompleted"),
)
HOPS = ("LotSubmitted", "VisionCompleted", "TranslationCompleted", "JobCompleted")


# How often the bench asks whether a job is done. Polling 20 times a second took about 0.1 of
# the machine's 2 cores from the pipeline it measured (the integrators' client polls every 30 s);
# when the job ended is read from its JobCompleted instead (`finished_after`).
POLL_S = 1.0


def wait_done(client: httpx2.Client, key: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll batch-status until the job is terminal; the last status document."""
    started = time.perf_counter()
    headers = job_headers(key, job_id)
    while time.perf_counter() - started < timeout_s:
        doc: dict[str, Any] = client.get(f"{gateway()}/api/v1/batch-status/{job_id}", headers=headers).json()
        if doc.get("status") in TERMINAL:
            return doc
        time.sleep(POLL_S)
    raise TimeoutError(f"job {job_id} not finished after {timeout_s} s: {doc}")


def finished_after(events: Sequence[tuple[str, datetime, int]], accepted_at: datetime) -> float:
    """Seconds from the 201 to the job's JobCompleted (published once its status reads terminal)."""
    end = last_of_each_type(events).get("JobCompleted")
    if end is None:
        raise RuntimeError("the job's JobCompleted is not on the completions topic")
    return (end - accepted_at).total_seconds()


def last_of_each_type(events: Sequence[tuple[str, datetime, int]]) -> dict[str, datetime]:
    """event type -> when the job's last event of that type occurred."""
    last: dict[str, datetime] = {}
    for event_type, at, _size in events:
        if event_type not in last or at > last[event_type]:
            last[event_type] = at
    return last


def stage_times(events: Sequence[tuple[str, datetime, int]]) -> dict[str, float]:
    """Seconds each stage adds on the critical path (see the module doc)."""
    last = last_of_each_type(events)
    start = last.get("JobSubmitted")
    times: dict[str, float] = {}
    for label, event_type in STAGES:
        end = last.get(event_type)
        if start is None or end is None:
            continue
        times[label] = max(0.0, (end - start).total_seconds())
        start = end
    return times


def event_stats(events: Sequence[tuple[str, datetime, int]]) -> dict[str, tuple[int, int]]:
    """event type -> (how many the job produced, their mean size in bytes)."""
    totals: dict[str, list[int]] = {}
    for event_type, _, size in events:
        entry = totals.setdefault(event_type, [0, 0])
        entry[0] += 1
        entry[1] += size
    return {kind: (count, size // count) for kind, (count, size) in totals.items()}


def event_spans(events: Sequence[tuple[str, datetime, int]]) -> dict[str, tuple[float, float]]:
    """event type -> (first, last) seconds after JobSubmitted (where each stage's work lies)."""
    start = min((at for kind, at, _ in events if kind == "JobSubmitted"), default=None)
    spans: dict[str, tuple[float, float]] = {}
    for kind, at, _ in events:
        offset = (at - start).total_seconds() if start else 0.0
        first, last = spans.get(kind, (offset, offset))
        spans[kind] = (min(first, offset), max(last, offset))
    return spans


def floor_run(lots: int, languages: Sequence[str], sizes: dict[str, int], conn: Any) -> dict[str, float]:
    """4 hops of `lots` events through fresh topics, then COPY of lots x languages rows; seconds."""
    topics = [f"bench-floor-{hop.lower()}-{uuid.uuid4().hex[:8]}" for hop in HOPS]
    kafkautil.create_topics(topics)
    try:
        prod = floor.producer()
        consumers = [floor.consumer_on(topic) for topic in topics]
        job_id = f"floor-{uuid.uuid4()}"
        key = job_id.encode()
        for topic, consumer in zip(topics, consumers, strict=True):  # warm: leaders, PID, fetch sessions
            floor.produce_all(prod, topic, key, [b"warm-up"])
            floor.consume_n(consumer, 1)
        table = floor.fresh_table(conn, "floor_texts (job_id text, lot_id text, language text, damages text)")
        result: dict[str, float] = {}
        started = time.perf_counter()
        for hop, topic, consumer in zip(HOPS, topics, consumers, strict=True):
            hop_started = time.perf_counter()
            pad = "x" * max(0, sizes.get(hop, 400) - 250)
            values = (
                floor.envelope_bytes(hop, job_id, {"lot_id": f"lot-{i}", "pad": pad}) for i in range(lots)
            )
            floor.produce_all(prod, topic, key, values)
            floor.consume_n(consumer, lots)
            result[f"hop {hop}"] = time.perf_counter() - hop_started
        copy_started = time.perf_counter()
        html = (
            "<p>"
            + "x" * max(0, sizes.get("TranslationCompleted", 1200) // max(1, len(languages)) - 7)
            + "</p>"
        )
        floor.copy_rows(conn, table, ((job_id, f"lot-{i}", language, html)
                                      for i in range(lots) for language in languages))
        result["copy results"] = time.perf_counter() - copy_started
        result["total_s"] = time.perf_counter() - started
        for consumer in consumers:
            consumer.close()
        return result
    finally:
        kafkautil.delete_topics(topics)
