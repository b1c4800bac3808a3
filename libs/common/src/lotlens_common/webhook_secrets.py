"""Clients' Standard Webhooks signing secrets: `whsec_<base64 of 32 random bytes>`.

Standard Webhooks signs with the secret's decoded bytes, which is what the official libraries
do with a `whsec_` string (`Webhook(secret)`). A client has one current secret (no expiry) and,
after a rotation, the previous ones until their overlap ends; every live secret signs each
delivery, so a receiver can switch secrets at any moment of the overlap.
The gateway makes a missing current secret at start-up (PostgreSQL unreachable then: at its
relay's minute-ly prune, which also deletes the secrets whose overlap has ended), and never again
while it runs: a secret deleted afterwards was deleted on purpose (`lotlens_gateway.relay`);
`lotlens-admin clients` shows, rotates and deletes.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from lotlens_common.tables import client_webhook_secrets as table

PREFIX = "whsec_"
_SECRET_BYTES = 32


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
    return [secret for secret, _ in live_until(conn, client_id, now)]


def live_until(conn: Connection, client_id: str, now: datetime) -> list[tuple[str, datetime | None]]:
    """The secrets that sign a client's deliveries now and when each stops (None: the current one)."""
    query = (select(table.c.secret, table.c.expires_at)
             .where(table.c.client_id == client_id,
                    or_(table.c.expires_at.is_(None), table.c.expires_at > now))
             .order_by(table.c.expires_at.desc().nulls_first(), table.c.created_at.desc()))
    return [(secret, expires_at) for secret, expires_at in conn.execute(query)]


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
