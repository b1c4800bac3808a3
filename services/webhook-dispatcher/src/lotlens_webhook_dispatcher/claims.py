"""Which due deliveries an instance claims: in turns between clients, within its free slots and
each host's and each client's share of them.

Each client with open deliveries is found by a skip scan of `ix_dispatch_client_due` (one index
probe per client, however many rows each has), and only its earliest-due rows are read down the
same index; of those, only the ones chosen are locked (`FOR UPDATE SKIP LOCKED`, still due).
They are taken in turns: every client's earliest before anyone's second, so a client's backlog
waits behind its own deliveries only. Claimed earliest-due first for everyone, a client with
50,000 webhooks to endpoints that never answer, each on a host name of its own (the per-host
limit never bit), held every slot for hours while every other client's webhooks waited; and the
claim sorted all due rows each time (0.8 s at 300,000). A client never has more than
`per_client` attempts under way on one instance. A row another session holds locked, or claimed
between the read and the lock, is passed over, and the candidates are read once more without it:
a lock held on a client's earliest rows no longer leaves the client nothing to claim.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, RowMapping, text, update

from lotlens_common.row_sets import json_rows
from lotlens_common.tables import dispatch_queue as q
from lotlens_webhook_dispatcher.dispatch_queue import HOST_PATTERN, INTERRUPTIONS_ALLOWED, Delivery
from lotlens_webhook_dispatcher.payloads import PartPlan

# Candidates read per client for each attempt it may start: rows of a host already given its
# room in this claim are passed over (and stay due for the next claim).
_CANDIDATES_PER_ATTEMPT = 2

# `status IN ('pending', 'sending')` as the partial index says it, so the planner uses the index.
# Read, not locked: locked here, every client's candidates were (2 x 16 rows each, 6,400 for 200
# clients to hand out 64), each lock a tuple header and WAL written, and skipped by every other
# instance meanwhile. Only the few chosen are locked (`_LOCK_CHOSEN`).
_DUE_IN_TURNS = text("""
    WITH RECURSIVE clients AS (
        (SELECT client_id FROM dispatch_queue
          WHERE status IN ('pending', 'sending') ORDER BY client_id LIMIT 1)
      UNION ALL
        SELECT (SELECT q.client_id FROM dispatch_queue q
                 WHERE q.status IN ('pending', 'sending') AND q.client_id > c.client_id
                 ORDER BY q.client_id LIMIT 1)
          FROM clients c WHERE c.client_id IS NOT NULL
    ), rooms AS (
        SELECT c.client_id, least(:slots, coalesce(r.room, :per_client)) AS room
          FROM clients c
          LEFT JOIN jsonb_to_recordset(CAST(:client_rooms AS jsonb)) AS r(client_id text, room int)
                 ON r.client_id = c.client_id
         WHERE c.client_id IS NOT NULL
    )
    SELECT d.delivery_id, d.client_id, d.host,
           row_number() OVER (PARTITION BY d.client_id ORDER BY d.next_attempt_at) AS turn
      FROM rooms c
     CROSS JOIN LATERAL (
          SELECT q.delivery_id, q.client_id, q.next_attempt_at,
                 coalesce(lower(substring(q.webhook_url, :host_pattern)), '') AS host
            FROM dispatch_queue q
           WHERE q.client_id = c.client_id AND q.status IN ('pending', 'sending')
             AND q.next_attempt_at <= :now
             AND q.delivery_id <> ALL(CAST(:in_flight AS text[]))
             AND coalesce(lower(substring(q.webhook_url, :host_pattern)), '')
                 <> ALL(CAST(:full_hosts AS text[]))
           ORDER BY q.next_attempt_at
           LIMIT :candidates * c.room
     ) d
     WHERE c.room > 0
     ORDER BY turn, d.next_attempt_at
     LIMIT :candidates * :slots""")

# The chosen rows, locked; those another instance holds or claimed since they were read are
# passed over (due again for the next claim, or no longer due).
_LOCK_CHOSEN = text("""
    SELECT q.* FROM dispatch_queue q
     WHERE q.delivery_id = ANY(CAST(:chosen AS text[])) AND q.status IN ('pending', 'sending')
       AND q.next_attempt_at <= :now
       FOR UPDATE SKIP LOCKED""")


@dataclass(frozen=True)
class Room:
    """What this instance may start now: `slots` attempts in all, and at most `per_host` to a host
    and `per_client` for a client, counting the attempts under way (`hosts`, `clients`)."""

    slots: int
    per_host: int
    per_client: int
    hosts: Mapping[str, int] = field(default_factory=dict)
    clients: Mapping[str, int] = field(default_factory=dict)

    def host(self, host: str) -> int:
        """Attempts the host may still take."""
        return self.per_host - self.hosts.get(host, 0)

    def client(self, client_id: str) -> int:
        """Attempts the client may still start."""
        return self.per_client - self.clients.get(client_id, 0)


def claim(conn: Connection, now: datetime, room: Room, lease_s: float,
          in_flight: Collection[str] = ()) -> list[Delivery]:
    """Claim up to `room.slots` due deliveries, taking the clients in turns, within `room`.

    `in_flight` are this instance's own attempts under way: a stalled one is never taken over by
    its own instance (another instance may, once the lease has run out).
    """
    chosen, passed = _claim_round(conn, now, room, in_flight)
    if passed:
        # Once more past the rows another session holds: a lock held for long (a claim stalled
        # or cut off mid-transaction) on a client's earliest rows left it nothing to claim while
        # it had later ones due. Our own chosen rows are excluded too (ours, so never skipped).
        more, _ = _claim_round(conn, now, _less(room, chosen),
                               [*in_flight, *passed, *(d.delivery_id for d in chosen)])
        chosen += more
    _lease(conn, chosen, now, lease_s)
    return chosen


def _claim_round(conn: Connection, now: datetime, room: Room,
                 excluded: Collection[str]) -> tuple[list[Delivery], list[str]]:
    """The due deliveries chosen in turns within `room` and locked, and the ids of those chosen but
    passed over (locked by another session, or claimed by it since they were read)."""
    if room.slots <= 0:
        return [], []
    candidates = conn.execute(_DUE_IN_TURNS, {
        "now": now, "slots": room.slots, "per_client": room.per_client, "host_pattern": HOST_PATTERN,
        "candidates": _CANDIDATES_PER_ATTEMPT, "in_flight": list(excluded),
        "client_rooms": json_rows({"client_id": c, "room": room.client(c)} for c in room.clients),
        "full_hosts": [host for host in room.hosts if room.host(host) <= 0]}).mappings()
    hosts, clients = dict(room.hosts), dict(room.clients)
    turns: list[str] = []
    for row in candidates:
        if len(turns) == room.slots:
            break
        host, client_id = row["host"], row["client_id"]
        if hosts.get(host, 0) >= room.per_host or clients.get(client_id, 0) >= room.per_client:
            continue
        hosts[host] = hosts.get(host, 0) + 1
        clients[client_id] = clients.get(client_id, 0) + 1
        turns.append(row["delivery_id"])
    if not turns:
        return [], []
    locked = {row["delivery_id"]: row for row in conn.execute(
        _LOCK_CHOSEN, {"chosen": turns, "now": now}).mappings()}
    chosen = [_delivery(locked[delivery_id]) for delivery_id in turns if delivery_id in locked]
    return chosen, [delivery_id for delivery_id in turns if delivery_id not in locked]


def _less(room: Room, chosen: list[Delivery]) -> Room:
    """`room` without what the `chosen` take."""
    hosts, clients = Counter(room.hosts), Counter(room.clients)
    hosts.update(d.host for d in chosen)
    clients.update(d.client_id for d in chosen)
    return Room(room.slots - len(chosen), room.per_host, room.per_client, dict(hosts), dict(clients))


def _lease(conn: Connection, chosen: list[Delivery], now: datetime, lease_s: float) -> None:
    """Lease the chosen rows: count the attempt of those to send, only move on the exhausted ones."""
    lease_until = now + timedelta(seconds=lease_s)
    to_send = [d.delivery_id for d in chosen if not d.exhausted]
    to_close = [d.delivery_id for d in chosen if d.exhausted]
    if to_send:
        conn.execute(_LEASE, {"ids": to_send, "lease_until": lease_until, "now": now})
    if to_close:
        conn.execute(update(q).where(q.c.delivery_id.in_(to_close)).values(
            next_attempt_at=lease_until, updated_at=now))


# As `_delivery` reads the row: a lapsed claim never sent keeps its attempt number; a lapsed marked
# one is an interruption, kept among the unpublished ones until its record is out
# (`dispatch_queue.interruptions_published`): cleared with the mark in this one write, the
# record lived only in this instance's memory, and was lost with it.
_LEASE = text("""
    UPDATE dispatch_queue AS q
       SET status = 'sending', next_attempt_at = :lease_until, post_started = false, updated_at = :now,
           attempt_count = q.attempt_count
               + CASE WHEN q.status = 'sending' AND NOT q.post_started THEN 0 ELSE 1 END,
           interruptions = q.interruptions
               + CASE WHEN q.status = 'sending' AND q.post_started THEN 1 ELSE 0 END,
           unpublished_interruptions = q.unpublished_interruptions
               || CASE WHEN q.status = 'sending' AND q.post_started AND q.attempt_count > 0
                       THEN jsonb_build_array(jsonb_build_object('attempt', q.attempt_count,
                                                                 'at', q.updated_at))
                       ELSE '[]'::jsonb END
     WHERE q.delivery_id = ANY(CAST(:ids AS text[]))""")


def _delivery(row: RowMapping) -> Delivery:
    count = int(row["attempt_count"])
    lapsed = row["status"] == "sending"  # a claim whose lease ran out
    interrupted = lapsed and count > 0 and bool(row["post_started"])
    never_sent = lapsed and not row["post_started"]
    interruptions = int(row["interruptions"]) + interrupted
    return Delivery(
        delivery_id=row["delivery_id"], job_id=row["job_id"], client_id=row["client_id"],
        webhook_url=row["webhook_url"], part=row["part"], total_parts=row["total_parts"],
        attempt=count if interruptions > INTERRUPTIONS_ALLOWED or never_sent else count + 1,
        interrupted_attempt=count if interrupted else None,
        interrupted_at=row["updated_at"] if interrupted else None,
        interruptions=interruptions,
        unsent_interruptions=int(row["unsent_interruptions"]),
        unpublished=tuple((int(lost["attempt"]), datetime.fromisoformat(lost["at"]))
                          for lost in row["unpublished_interruptions"]),
        traceparent=row["traceparent"],
        unready_since=row["unready_since"],
        scheduled_at=row["created_at"],
        plan=None if row["part_plan"] is None else PartPlan.from_json(row["part_plan"]),
    )
