"""Clients' Standard Webhooks signing secrets: `whsec_<base64 of 32 random bytes>`.

Standard Webhooks signs with the secret's decoded bytes, which is what the official libraries
do with a `whsec_` string (`Webhook(secret)`). A client has one current secret (no expiry) and,
after a rotation, the previous ones until their overlap ends; every live secret signs each
delivery, so a receiver can switch secrets at any moment of the overlap.
The gateway makes a missing current secret at start-up (PostgreSQL unreachable then: at its
relay's minute-ly prune, which also deletes the secrets whose overlap has ended), and never again
while it runs: a secret deleted afterwards was deleted on purpose (`lotlens_gateway.relay`);
`lotlens-admin clients` shows, rotates and deletes.

A client's secrets have a version: when its current secret was made (None: it has none). Every
change to what signs makes a new current secret (`rotate`, `ensure`) or removes it
(`delete_client`); an overlap's end does not, but each secret is read with its end. A reader that
keeps the secrets (the dispatcher's cache) learns of a change where it writes anyway
(`CHANGED_SQL`): the same statement returns the secrets, only when their version is not the one it
keeps, so no read follows it.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert

from lotlens_common.tables import client_webhook_secrets as table

PREFIX = "whsec_"
_SECRET_BYTES = 32
# The secrets of the client `client_id` names that sign at `now`, current first, and their
# version: one JSON document (`Signing.from_json`), a scalar subquery, so that a statement that
# runs anyway can carry it (`CHANGED_SQL`).
SIGNING_SQL = """(SELECT jsonb_build_object(
         'version', max(s.created_at) FILTER (WHERE s.expires_at IS NULL),
         'secrets', coalesce(jsonb_agg(jsonb_build_array(s.secret, s.expires_at)
                                       ORDER BY s.expires_at DESC NULLS FIRST, s.created_at DESC), '[]'))
    FROM client_webhook_secrets s
   WHERE s.client_id = {client_id} AND (s.expires_at IS NULL OR s.expires_at > {now}))"""
# `SIGNING_SQL` when the client's version is not `known`, NULL when it is: then only the version
# is read, through the partial unique index on the current secret (the statement stays cheap).
CHANGED_SQL = ("CASE WHEN (SELECT s.created_at FROM client_webhook_secrets s"
               " WHERE s.client_id = {client_id} AND s.expires_at IS NULL) IS DISTINCT FROM {known}"
               f" THEN {SIGNING_SQL} END")


@dataclass(frozen=True)
class Signing:
    """A client's live secrets as read, the current one first, each with when it stops signing
    (None: the current one), and their version."""

    version: datetime | None
    secrets: list[tuple[str, datetime | None]]

    def live(self, now: datetime) -> list[str]:
        """The secrets that sign at `now` (one whose overlap ended since the read no longer does)."""
        return [secret for secret, ends in self.secrets if ends is None or ends > now]

    @classmethod
    def from_json(cls, found: dict[str, Any]) -> Signing:
        """The secrets as `SIGNING_SQL` returns them."""
        return cls(_timestamp(found["version"]),
                   [(secret, _timestamp(ends)) for secret, ends in found["secrets"]])


def _timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def new_secret() -> str:
    """A fresh random `whsec_` secret."""
    return PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret: its base64 part decoded."""
    encoded = secret[len(PREFIX):] if secret.startswith(PREFIX) else secret
    return base64.b64decode(encoded + "==")


def ensure(conn: Connection, client_ids: Iterable[str]) -> None:
    """Give each client without a current secret a new one (idempotent, safe to race)."""
    rows = [{"client_id": client_id, "secret": new_secret()} for client_id in client_ids]
    if rows:
        conn.execute(insert(table).values(rows).on_conflict_do_nothing())


def live(conn: Connection, client_id: str, now: datetime) -> list[str]:
    """The secrets that sign a client's deliveries now, the current one first."""
    return signing(conn, client_id, now).live(now)


def signing(conn: Connection, client_id: str, now: datetime) -> Signing:
    """The secrets that sign a client's deliveries now, when each stops, and their version."""
    query = text(f"SELECT {SIGNING_SQL.format(client_id=':client_id', now=':now')} AS signing")
    return Signing.from_json(conn.execute(query, {"client_id": client_id, "now": now}).scalar_one())


def delete_client(conn: Connection, client_id: str) -> int:
    """Delete every secret of a client (one no longer configured); how many."""
    return int(conn.execute(delete(table).where(table.c.client_id == client_id)).rowcount)


def prune(conn: Connection, now: datetime) -> int:
    """Delete every secret whose overlap has ended (it signs nothing any more); how many."""
    return int(conn.execute(delete(table).where(table.c.expires_at <= now)).rowcount)


@dataclass(frozen=True)
class LiveSecret:
    """One secret that signs now: whose, since when, and until when (None: the current one)."""

    client_id: str
    secret: str
    created_at: datetime
    expires_at: datetime | None


def listing(conn: Connection, now: datetime) -> list[LiveSecret]:
    """Every live secret of every client, each client's current one first."""
    query = (select(table.c.client_id, table.c.secret, table.c.created_at, table.c.expires_at)
             .where(or_(table.c.expires_at.is_(None), table.c.expires_at > now))
             .order_by(table.c.client_id, table.c.expires_at.desc().nulls_first()))
    return [LiveSecret(*row) for row in conn.execute(query)]


def rotate(conn: Connection, client_id: str, overlap: timedelta, now: datetime) -> str:
    """Make a new current secret; the old current one keeps signing for `overlap`, then stops."""
    conn.execute(update(table).where(table.c.client_id == client_id, table.c.expires_at.is_(None))
                 .values(expires_at=now + overlap))
    # Older secrets still in an earlier overlap stop with the old current one at the latest.
    conn.execute(update(table).where(table.c.client_id == client_id, table.c.expires_at > now + overlap)
                 .values(expires_at=now + overlap))
    secret = new_secret()
    conn.execute(insert(table).values(client_id=client_id, secret=secret, created_at=now))
    return secret
