"""The durable delivery schedule: the `dispatch_queue` work table, owned by this service alone.

A row is one delivery (job, URL, part): `pending` until due, `sending` while an instance holds
it, then `delivered` or `failed`. Claiming (`claims.py`, in turns between clients) takes due
rows with `FOR UPDATE SKIP LOCKED` and, in the same transaction, counts the attempt and leases
the row (`next_attempt_at` moves past the longest an attempt can take). Right before its POST
the attempt marks the row (`mark_posting`: `post_started`, the lease renewed), and only the
holder of the claim can: two instances never send the same attempt. A row still `sending` when
its lease runs out belongs to an instance that died or lost PostgreSQL mid-attempt. Marked, the
attempt may have been sent: the next claim records it as interrupted and carries on with the
schedule; the row keeps the interrupted attempt among its unpublished ones until its record is
out (`interruptions_published`), so an instance killed after that claim leaves it to the next.
An interrupted attempt may never have been sent, so it does not count against the schedule; a
delivery interrupted more than `INTERRUPTIONS_ALLOWED` times (one that kills whoever
sends it) is given up. Unmarked, it was never sent: the next claim makes the same attempt again,
no interruption (an instance that lost PostgreSQL before it could hand such a claim back left a
false one). An attempt known to have broken before its POST is handed back (`record_many`, not
spent): `pending` again with the attempt count it had before the claim, so it is no interruption
either.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Text,
    any_,
    cast,
    delete,
    func,
    select,
    text,
    update,
)

from lotlens_common import webhook_secrets
from lotlens_common.row_sets import json_rows
from lotlens_common.tables import dispatch_queue as q
from lotlens_common.uuids import uuid5_text
from lotlens_common.webhook_secrets import Signing
from lotlens_webhook_dispatcher.payloads import PartPlan

_NAMESPACE = uuid.UUID("5b0f6f64-61c4-4f0e-9d55-8d3c2bde0a11")
# The authority (host[:port]) of a URL; the same pattern runs in PostgreSQL and in Python.
HOST_PATTERN = "^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)"
_HOST_RE = re.compile(HOST_PATTERN)
OPEN = ("pending", "sending")
FINISHED = ("delivered", "failed")
INTERRUPTIONS_ALLOWED = 5
@dataclass(frozen=True)
class Delivery:
    """A claimed delivery and the attempt this instance is about to make."""

    delivery_id: str
    job_id: str
    client_id: str
    webhook_url: str
    part: int
    total_parts: int
    attempt: int
    # An attempt a dead instance started (its POST may have gone out) and never recorded, and
    # when it started.
    interrupted_attempt: int | None = None
    interrupted_at: datetime | None = None
    # Attempts interrupted so far, that one included, and of those the ones handed back unsent
    # (their failure could not be marked: `not_started.unmarked`), which took no attempt number.
    interruptions: int = 0
    unsent_interruptions: int = 0
    # Interrupted attempts found by earlier claims whose records are not known to be published
    # (attempt, when it started): the instance that found them may have died before publishing.
    unpublished: tuple[tuple[int, datetime], ...] = ()
    # The job's W3C trace context (None when tracing was off as it was scheduled).
    traceparent: str | None = None
    # Since when its attempts could not start yet (how long it has waited for what they need).
    unready_since: datetime | None = None
    # When it was scheduled: its body is built from read models read no earlier (`finished_jobs`).
    scheduled_at: datetime | None = None
    # Its part's lots as scheduled (None: scheduled by the release before plans).
    plan: PartPlan | None = None

    @property
    def exhausted(self) -> bool:
        """Interrupted too often: nothing more is sent."""
        return self.interrupted_attempt is not None and self.attempt == self.interrupted_attempt

    @property
    def sent_attempt(self) -> int:
        """Which attempt this is on the retry schedule, the interrupted ones not counted (those
        handed back unsent gave their number back: subtracted, one such hand-back made the next
        attempt "attempt 0", given up after a single failed POST)."""
        return self.attempt - (self.interruptions - self.unsent_interruptions)

    @property
    def interrupted_attempts(self) -> list[tuple[int, datetime]]:
        """Every interrupted attempt whose record this claim publishes: the earlier unpublished
        ones and the one it found."""
        found = [] if self.interrupted_attempt is None else [
            (self.interrupted_attempt, self.interrupted_at or datetime.min)]
        return [*self.unpublished, *found]

    @property
    def host(self) -> str:
        """The endpoint the per-host concurrency limit counts against."""
        return endpoint(self.webhook_url)


def delivery_id(job_id: str, webhook_url: str, part: int, redelivery_id: str = "") -> str:
    """The stable id of a delivery (also the Standard Webhooks `webhook-id`); a redelivery's differ."""
    round_key = f"\n{redelivery_id}" if redelivery_id else ""
    return uuid5_text(_NAMESPACE, f"{job_id}\n{webhook_url}\n{part}{round_key}")


def endpoint(url: str) -> str:
    """The host[:port] of a URL, lower-cased ('' when it has none)."""
    match = _HOST_RE.match(url)
    return match.group(1).lower() if match else ""


def scheduled_urls(conn: Connection, job_id: str, urls: list[str], redelivery_id: str = "") -> set[str]:
    """Those of the URLs that already have deliveries for the job (in that redelivery)."""
    ids = {delivery_id(job_id, url, 1, redelivery_id): url for url in urls}
    found = conn.execute(select(q.c.delivery_id).where(q.c.delivery_id == any_(cast(list(ids), ARRAY(Text)))))
    return {ids[found_id] for found_id in found.scalars()}


def schedule(conn: Connection, job_id: str, client_id: str, parts: Mapping[str, Sequence[PartPlan]],
             now: datetime, redelivery_id: str = "", traceparent: str | None = None) -> int:
    """Add one due-now delivery per (URL, part), with its part's plan; existing ones are left
    alone. Returns how many."""
    keys = [(url, part, len(plans), plan) for url, plans in parts.items()
            for part, plan in enumerate(plans, start=1)]
    if not keys:
        return 0
    # One statement over the rows as one JSON document: a multi-row VALUES of a 50,000-URL job
    # is compiled anew each time (a quarter of the dispatcher's CPU went to compiling them).
    result = conn.execute(text("""
        INSERT INTO dispatch_queue (delivery_id, job_id, client_id, webhook_url, part, total_parts,
                                    status, attempt_count, next_attempt_at, created_at, updated_at,
                                    traceparent, part_plan)
        SELECT d.delivery_id, :job_id, :client_id, d.webhook_url, d.part, d.total_parts,
               'pending', 0, :now, :now, :now, :traceparent, d.part_plan
          FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS d(delivery_id text, webhook_url text, part int, total_parts int, part_plan jsonb)
        ON CONFLICT (delivery_id) DO NOTHING"""),
        {"job_id": job_id, "client_id": client_id, "now": now, "traceparent": traceparent,
         "rows": json_rows({"delivery_id": delivery_id(job_id, url, part, redelivery_id),
                            "webhook_url": url, "part": part, "total_parts": total,
                            "part_plan": plan.to_json()}
                           for url, part, total, plan in keys)})
    return int(result.rowcount)


def renew(conn: Connection, delivery: Delivery, now: datetime, lease_s: float) -> bool:
    """Extend the lease right before sending; False when another instance has taken the attempt over."""
    result = conn.execute(update(q).where(_held(delivery)).values(
        next_attempt_at=now + timedelta(seconds=lease_s), updated_at=now))
    return result.rowcount == 1


def mark_posting(conn: Connection, deliveries: Sequence[Delivery], now: datetime, lease_s: float,
                 versions_known: Mapping[str, datetime | None] | None = None) -> dict[str, Signing | None]:
    """Mark the attempts' POSTs as starting and renew their leases, right before sending, in one
    statement; those still this instance's to send, each with its client's secrets when they are
    not at the version its caller knows (`versions_known`, per delivery id; None: none known), None
    when they are. Read here, in the statement every attempt runs anyway, a rotation reaches the
    very next POST and no read follows the mark. The rest were taken over, handed back, or marked
    by another instance that took the claim over unsent: the fencing number alone does not tell
    those apart."""
    known = versions_known or {}
    changed = webhook_secrets.CHANGED_SQL.format(client_id="q.client_id", known="m.known", now=":now")
    result = conn.execute(text(f"""
        UPDATE dispatch_queue AS q
           SET post_started = true, next_attempt_at = :lease_until, updated_at = :now
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS m(delivery_id text, attempt int, known timestamptz)
         WHERE q.delivery_id = m.delivery_id AND q.status = 'sending' AND q.attempt_count = m.attempt
           AND NOT q.post_started
     RETURNING q.delivery_id, {changed}"""),
        {"now": now, "lease_until": now + timedelta(seconds=lease_s), "rows": json_rows(
            {"delivery_id": delivery.delivery_id, "attempt": delivery.attempt,
             "known": known.get(delivery.delivery_id)} for delivery in deliveries)})
    return {delivery_id: None if found is None else Signing.from_json(found) for delivery_id, found in result}


class Record(NamedTuple):
    """An attempt's outcome to store: the delivery's status, next attempt, whether the attempt was
    spent, whether its hand-back counts an interruption (`not_started.unmarked`), and whether it is
    handed back unready (`unready_since` set if unset; a spent attempt clears it)."""

    delivery: Delivery
    status: str
    due: datetime | None
    spent: bool
    interrupted: bool = False
    unready: bool = False


def record_many(conn: Connection, outcomes: Sequence[Record],
                now: datetime) -> set[str]:
    """Store attempts' outcomes (`Record`) in one statement; the ids of those still held (stored).

    An attempt not spent (it broke before its POST) gives its number back: the claim is undone
    but for the interruption it may have found, and the next claim makes the same attempt. An
    attempt whose lease was lost to another instance meanwhile is not stored: that instance owns
    the delivery now. A takeover of an unsent claim has the same fencing number, so the mark tells
    the two apart: a hand-back is refused once the attempt is marked, and a spent attempt is
    stored only marked, by the instance that marked it (a stalled claim's failed attempt was
    stored over the attempt the takeover had sent, and the sender's `delivered` refused).
    A row at rest says `post_started`: an instance of an older version claims without resetting
    it, and its lapsed claims are interruptions.
    """
    if not outcomes:
        return set()
    # One UPDATE over all the rows: an executemany of UPDATEs is one round trip per row in psycopg2.
    result = conn.execute(text("""
        UPDATE dispatch_queue AS q
           SET status = o.status, next_attempt_at = o.next_attempt_at, updated_at = :now,
               attempt_count = q.attempt_count - CASE WHEN o.spent THEN 0 ELSE 1 END, post_started = true,
               interruptions = q.interruptions + CASE WHEN o.interrupted THEN 1 ELSE 0 END,
               unsent_interruptions = q.unsent_interruptions + CASE WHEN o.interrupted THEN 1 ELSE 0 END,
               unready_since = CASE WHEN o.unready THEN coalesce(q.unready_since, :now)
                                    WHEN o.spent THEN NULL ELSE q.unready_since END
          FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS o(delivery_id text, attempt int, status text, next_attempt_at timestamptz, spent boolean,
                    interrupted boolean, unready boolean)
         WHERE q.delivery_id = o.delivery_id AND q.status = 'sending' AND q.attempt_count = o.attempt
           AND o.spent = q.post_started
     RETURNING q.delivery_id"""),
        {"now": now, "rows": json_rows(
            {"delivery_id": r.delivery.delivery_id, "attempt": r.delivery.attempt, "status": r.status,
             "next_attempt_at": r.due or now, "spent": r.spent, "interrupted": r.interrupted,
             "unready": r.unready}
            for r in outcomes)})
    return set(result.scalars())


def interruptions_published(conn: Connection, published: Sequence[tuple[str, Sequence[int]]]) -> None:
    """Forget that these interrupted attempts' records (delivery id, attempt numbers) are unpublished:
    they are. Whoever holds the delivery now; its `updated_at` (a marked attempt's start) is kept."""
    rows = [{"delivery_id": delivery_id, "attempt": attempt}
            for delivery_id, attempts in published for attempt in attempts]
    if not rows:
        return
    conn.execute(text("""
        UPDATE dispatch_queue AS q
           SET unpublished_interruptions = coalesce((
               SELECT jsonb_agg(e) FROM jsonb_array_elements(q.unpublished_interruptions) AS e
                WHERE NOT EXISTS (SELECT FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                                              AS p(delivery_id text, attempt int)
                                   WHERE p.delivery_id = q.delivery_id
                                     AND p.attempt = (e ->> 'attempt')::int)), '[]'::jsonb)
         WHERE q.delivery_id = ANY(CAST(:ids AS text[])) AND q.unpublished_interruptions <> '[]'::jsonb"""),
        {"rows": json_rows(rows), "ids": sorted({delivery_id for delivery_id, _ in published})})


def _held(delivery: Delivery) -> ColumnElement[bool]:
    # Every claim that sends bumps attempt_count, so the count is the claim's fencing token.
    return (q.c.delivery_id == delivery.delivery_id) & (q.c.status == "sending") \
        & (q.c.attempt_count == delivery.attempt)


def prune(conn: Connection, before: datetime, limit: int) -> int:
    """Forget up to `limit` finished deliveries last attempted before `before`; how many.

    A finished row's `next_attempt_at` is its last attempt's time, so `ix_dispatch_due` finds
    them; rows another instance is deleting are skipped, not waited for.
    """
    oldest = (select(q.c.delivery_id).where(q.c.status.in_(FINISHED), q.c.next_attempt_at < before)
              .limit(limit).with_for_update(skip_locked=True))
    return int(conn.execute(delete(q).where(q.c.delivery_id.in_(oldest.scalar_subquery()))).rowcount)


def backlog(conn: Connection, now: datetime) -> tuple[int, float]:
    """Open deliveries and the age in seconds of the oldest one."""
    count, oldest = conn.execute(select(func.count(), func.min(q.c.created_at))
                                 .where(q.c.status.in_(OPEN))).one()
    return int(count), (now - oldest).total_seconds() if oldest is not None else 0.0
