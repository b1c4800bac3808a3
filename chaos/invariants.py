"""What must hold after a chaos run, whatever the faults were; each breach is one violation."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, func, select

from chaos.spend import batch_breaches, paid_batches
from chaos.stack import STANDIN_KEY, ChaosStack
from chaos.usage_check import settled_usage, usage_breaches
from chaos.webhook_check import Finished, webhook_breaches
from chaos.workload import Submitted
from lotlens_admin.dlq import read_letters
from lotlens_common import dead_letters
from lotlens_common.envelope import Envelope
from lotlens_common.events import TERMINAL_JOB_STATUSES
from lotlens_common.settings import KafkaSettings
from lotlens_common.tables import descriptions, jobs, lots, webhook_deliveries
from tests.events import read_to_end
from tests.seeds import seed_webhook_verifier
from tests.servers import WebhookReceiver

# The events a crash may make a service publish twice; each copy must keep the first one's id (the
# contract tells subscribers to deduplicate by it). The gateway's events get theirs in its outbox,
# and the webhook events are remade by each attempt, so neither is listed.
REPUBLISHED_TOPICS = ("vision", "translation", "completions")
# What tells two such events of one job apart (each type has those of these fields it has).
OCCURRENCE_FIELDS = ("stage", "lot_id", "shard_id", "batch_id", "redelivery_id")
# A stage's outcome for a lot: described (these) or failed (`LotFailed` with its `stage`).
OUTCOME_STAGES = {"VisionCompleted": "vision", "TranslationCompleted": "translation"}
# Groups reading the submissions topic: each dead-letters its own copy of a poison message there.
SUBMISSION_GROUPS = 3
# The receiver's modes that never accept a delivery (`workload.answer`).
REFUSING = {"gone", "silent"}


def wait_terminal(engine: Engine, job_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Every job's status once all are terminal, or when the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.connect() as conn:
            rows = conn.execute(select(jobs.c.job_id, jobs.c.status).where(jobs.c.job_id.in_(job_ids)))
            found = {job_id: status for job_id, status in rows}
        if all(found.get(j) in TERMINAL_JOB_STATUSES for j in job_ids) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def check(
    stack: ChaosStack,
    engine: Engine,
    out: Submitted,
    receiver: WebhookReceiver,
    poison: int,
    timeout_s: float,
) -> list[str]:
    """Every invariant of the run; the list of violations (empty: the run passed)."""
    violations: list[str] = []
    statuses = wait_terminal(engine, list(out.accepted), timeout_s)
    violations += check_jobs(engine, out, statuses)
    violations += out.sync_wrong
    violations += check_refused(engine, out)
    paid = paid_batches(stack.standin_url, STANDIN_KEY)
    violations += batch_breaches(paid)
    violations += _webhooks(stack, out, statuses, receiver)
    # After the webhooks: they follow JobCompleted, so every finished job's usage is summed by now
    # (a cancelled job's keeps growing with its late answers: `settled_usage` waits for them).
    finished = [job_id for job_id in out.accepted if statuses.get(job_id) in TERMINAL_JOB_STATUSES]
    cancelled = [job_id for job_id in finished if statuses[job_id] == "cancelled"]
    billed, lot_usage, job_usage, unchecked = settled_usage(stack, engine, finished, cancelled, timeout_s)
    violations += usage_breaches(billed, lot_usage, job_usage, finished, unchecked)
    violations += _deliveries(engine, statuses)
    violations += _dead_letters(stack, poison)
    violations += _event_ids(stack, out)
    return violations


def check_jobs(engine: Engine, out: Submitted, statuses: dict[str, str]) -> list[str]:
    found: list[str] = []
    with engine.connect() as conn:
        for job_id, (plan, lot_ids) in out.accepted.items():
            status = statuses.get(job_id)
            if job_id in out.cancelled and status == "cancelled":
                found += _cancelled_lots(conn, job_id, len(plan.languages))
            elif status == "completed":
                # A cancel that came too late lets the job finish: then it owes every lot, as any other.
                found += _completed_lots(conn, job_id, lot_ids, len(plan.languages))
            elif job_id in out.cancelled:
                found.append(f"cancelled job {job_id} ended {status}")
            else:
                found.append(f"job {job_id} ({plan.lots} lots) is {status}, not completed")
    return found


def _completed_lots(conn: Connection, job_id: str, lot_ids: list[str], languages: int) -> list[str]:
    """A completed job: each lot asked for completed once, every language described, counted."""
    found: list[str] = []
    rows = conn.execute(select(lots.c.lot_id, lots.c.status).where(lots.c.job_id == job_id)).all()
    if sorted(r.lot_id for r in rows) != sorted(lot_ids) or any(r.status != "completed" for r in rows):
        found.append(f"job {job_id}: lots {len(rows)} of {len(lot_ids)}, not each completed once")
    texts = _descriptions_per_lot(conn, job_id)
    if set(texts.values()) != {languages} or len(texts) != len(lot_ids):
        found.append(f"job {job_id}: descriptions per lot {set(texts.values())}, "
                     f"want {languages} for each of {len(lot_ids)}")
    processed = conn.execute(select(jobs.c.processed_lots).where(jobs.c.job_id == job_id)).scalar()
    if processed != len(rows):
        found.append(f"job {job_id}: read model says {processed} processed, {len(rows)} lot rows")
    return found


def _cancelled_lots(conn: Connection, job_id: str, languages: int) -> list[str]:
    """A cancelled job: no lot left running, and each lot it completed before the cancel described
    in every language (a cancel stops the work still to do, it does not lose work done)."""
    rows = conn.execute(select(lots.c.lot_id, lots.c.status).where(lots.c.job_id == job_id)).all()
    running = [r.lot_id for r in rows if r.status not in ("completed", "failed", "cancelled")]
    texts = _descriptions_per_lot(conn, job_id)
    short = [r.lot_id for r in rows if r.status == "completed" and texts[r.lot_id] != languages]
    found = [f"cancelled job {job_id}: lots {running[:5]} left running"] if running else []
    if short:
        found.append(f"cancelled job {job_id}: completed lots {short[:5]} lack descriptions")
    return found


def _descriptions_per_lot(conn: Connection, job_id: str) -> Counter[str]:
    """How many descriptions (one per language) each lot of the job has."""
    lot_ids = conn.execute(select(descriptions.c.lot_id).where(descriptions.c.job_id == job_id)).scalars()
    return Counter(lot_ids)


def check_refused(engine: Engine, out: Submitted) -> list[str]:
    refused = [lot for request in out.refused for lot in request]
    if not refused:
        return []
    with engine.connect() as conn:
        ran = conn.execute(select(func.count()).where(lots.c.lot_id.in_(refused))).scalar_one()
    return [f"{ran} lots of requests answered without 2xx were processed"] if ran else []


def _webhooks(
    stack: ChaosStack, out: Submitted, statuses: dict[str, str], receiver: WebhookReceiver
) -> list[str]:
    """Each completed or cancelled job's webhook arrived whole (see `webhook_check`)."""
    finished = {job_id: Finished(statuses[job_id], frozenset(lot_ids), len(plan.languages))
                for job_id, (plan, lot_ids) in out.accepted.items()
                if statuses.get(job_id) in ("completed", "cancelled")}
    verify = seed_webhook_verifier()
    deadline = time.monotonic() + 60  # deliveries follow JobCompleted, after the read models
    while True:
        found = webhook_breaches(list(receiver.received), verify, stack.client_key, finished)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def _deliveries(engine: Engine, statuses: dict[str, str]) -> list[str]:
    """Every delivery of a completed job to a URL the receiver accepts (all but `/gone/` and
    `/silent/`, see `workload.answer`) ends delivered: a `failed` one was given up by the faults
    alone (an attempt interrupted by a kill, or not recorded while Kafka was down, used to count
    as one of the five)."""
    completed = [job_id for job_id, status in statuses.items() if status == "completed"]
    deadline = time.monotonic() + 60  # the last attempts' records reach the read models
    d = webhook_deliveries.c
    while True:
        with engine.connect() as conn:
            rows = conn.execute(select(d.batch_job_id, d.webhook_url, d.status, d.error_message)
                                .where(d.batch_job_id.in_(completed), d.status != "delivered")).all()
        undelivered = [row for row in rows if urlsplit(row.webhook_url).path.split("/")[1] not in REFUSING]
        if not undelivered or time.monotonic() > deadline:
            return [f"job {row.batch_job_id}'s delivery to {row.webhook_url} ended {row.status}: "
                    f"{row.error_message}" for row in undelivered]
        time.sleep(1)


def _event_ids(stack: ChaosStack, out: Submitted) -> list[str]:
    envelopes = [
        envelope
        for name in REPUBLISHED_TOPICS
        for envelope in read_to_end(stack.kafka_bootstrap, getattr(stack.topics, name))
        if envelope.job_id in out.accepted
    ]
    return ids_changed(envelopes) + contradicting_outcomes(envelopes)


def contradicting_outcomes(envelopes: Iterable[Envelope]) -> list[str]:
    """One violation per lot that a stage both failed and described (each under its own id)."""
    outcomes: dict[tuple[str, str, str], set[str]] = {}
    for envelope in envelopes:
        event = envelope.event
        stage = OUTCOME_STAGES.get(envelope.type) or getattr(event, "stage", None)
        if envelope.type in (*OUTCOME_STAGES, "LotFailed") and stage:
            outcomes.setdefault((envelope.job_id, str(getattr(event, "lot_id", "")), stage), set()).add(
                envelope.type)
    return [f"{job} {lot} has {len(types)} outcomes at the {stage} stage: {', '.join(sorted(types))}"
            for (job, lot, stage), types in outcomes.items() if len(types) > 1]


def ids_changed(envelopes: Iterable[Envelope]) -> list[str]:
    """One violation per event that was published again under another id."""
    ids: dict[tuple[str, ...], set[str]] = {}
    for envelope in envelopes:
        ids.setdefault(_occurrence(envelope), set()).add(envelope.event_id)
    return [f"{' '.join(key)} published under {len(found)} event ids"
            for key, found in ids.items() if len(found) > 1]


def _occurrence(envelope: Envelope) -> tuple[str, ...]:
    """What one event is about, whoever published it and however often."""
    event = envelope.event
    about = [str(getattr(event, name)) for name in OCCURRENCE_FIELDS if hasattr(event, name)]
    return (envelope.type, envelope.job_id, *about)


def _dead_letters(stack: ChaosStack, poison: int) -> list[str]:
    found = read_letters(KafkaSettings(bootstrap_servers=stack.kafka_bootstrap), stack.topics.dead_letter)
    letters = found.letters
    want = poison * SUBMISSION_GROUPS
    odd = [
        f"{letter.group}:{letter.reason}:{letter.error[:80]}"
        for letter in letters
        if letter.reason != dead_letters.UNDECODABLE
    ]
    if len(letters) != want or odd:
        return [
            f"dead-letter topic holds {len(letters)} letters, want {want} (the injected poison); "
            f"unexpected: {odd[:5]}"
        ]
    return []
