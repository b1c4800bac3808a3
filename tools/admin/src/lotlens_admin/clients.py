"""`lotlens-admin clients`: each client's Standard Webhooks secrets (`whsec_…`), shown and rotated.

The gateway gives every configured client a secret when it starts (PostgreSQL unreachable then:
within a minute of its return); `rotate` makes a new one and lets the old one keep signing for
the overlap, so the integrator can switch receivers without a gap. Secrets are printed only by
`secret`, which an operator runs to hand one to its client.
Every command refuses a client with no secret: the gateway makes one for each configured client,
so none means a mistyped id. `delete` removes a client's secrets once it is no longer configured;
the running gateways never make them again (those still running a configuration that has the
client, during its rollout, included), only a gateway started with the client configured.

Clients are configured in the gateway's `LOTLENS_CLIENTS`, not in the database: where this
process's environment has it (read as the gateway reads it, ids only), `list` says where each
client comes from and `delete` refuses a configured one; elsewhere both say they cannot tell.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy import Connection

from lotlens_admin.consent import add_flags, withheld
from lotlens_admin.sessions import admin_engine
from lotlens_common import webhook_secrets
from lotlens_common.clock import utc_now
from lotlens_common.settings import settings_config

CONFIGURED = "from LOTLENS_CLIENTS"
STRAY = "database only (not in LOTLENS_CLIENTS: `clients delete` removes it)"
UNKNOWN = "source unknown (LOTLENS_CLIENTS is not set here)"


class ConfiguredClients(BaseSettings):
    """The gateway's `LOTLENS_CLIENTS`, read with its settings' config (None: not set here)."""

    model_config = settings_config("LOTLENS_", nested=True)

    clients: dict[str, SecretStr] | None = None


class BadConfiguration(Exception):
    """LOTLENS_CLIENTS is set but not a client map (its value is not echoed: it holds keys)."""


def configured_clients() -> set[str] | None:
    """The client ids configured in this environment's LOTLENS_CLIENTS (None: not set here)."""
    try:
        clients = ConfiguredClients().clients
    except ValidationError as exc:
        raise BadConfiguration("LOTLENS_CLIENTS is set here but is not a JSON object of client ids "
                               "and keys") from exc
    return None if clients is None else set(clients)


def _list(_args: argparse.Namespace) -> int:
    configured = configured_clients()
    engine = admin_engine()
    with engine.connect() as conn:
        rows = webhook_secrets.listing(conn, utc_now())
    engine.dispose()
    for row in rows:
        until = _minute(row.expires_at) if row.expires_at else "current"
        print(f"{row.client_id}\twhsec_…{row.secret[-4:]}\tcreated {_minute(row.created_at)}"
              f"\tsigns until: {until}\t{_source(row.client_id, configured)}")
    # Configured but without a secret: no gateway started since it was configured (or since its
    # secret was deleted), or none could reach PostgreSQL since it started.
    for client_id in sorted((configured or set()) - {row.client_id for row in rows}):
        print(f"{client_id}\tno secret yet (a gateway started with it makes it)\t\t\t{CONFIGURED}")
    return 0


def _source(client_id: str, configured: set[str] | None) -> str:
    if configured is None:
        return UNKNOWN
    return CONFIGURED if client_id in configured else STRAY


def _minute(moment: datetime) -> str:
    # psycopg2 gives timestamptz in the session's zone (the server's or role's TimeZone, PGTZ).
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M}Z"


def _secret(args: argparse.Namespace) -> int:
    engine = admin_engine()
    with engine.connect() as conn:
        live = webhook_secrets.live(conn, args.client_id, utc_now())
    engine.dispose()
    if not live:
        return _unknown(args.client_id, "has no webhook secret")
    print(live[0])
    return 0


def _rotate(args: argparse.Namespace) -> int:
    engine = admin_engine()
    with engine.begin() as conn:
        secret = (webhook_secrets.rotate(conn, args.client_id, timedelta(hours=args.overlap_hours), utc_now())
                  if _known(conn, args.client_id) else None)
    engine.dispose()
    if secret is None:
        return _unknown(args.client_id, "has no webhook secret to rotate")
    print(secret)
    return 0


def _delete(args: argparse.Namespace) -> int:
    configured = configured_clients()
    if configured is not None and args.client_id in configured:
        # Deleted, its secret came back at the gateway's next start (its webhooks unsigned until
        # then) while the command said it was done.
        print(f"lotlens-admin: client {args.client_id!r} comes from LOTLENS_CLIENTS: remove it there "
              "(and restart the gateway and the dispatcher) first, or its webhooks wait until a gateway "
              "started with it makes it a new secret; nothing was deleted", file=sys.stderr)
        return 1
    engine = admin_engine()
    try:
        with engine.connect() as conn:
            live = webhook_secrets.live(conn, args.client_id, utc_now())
        if not live:  # a typo, or deleted already (the gateways prune the expired ones)
            return _unknown(args.client_id, "has no webhook secret to delete")
        plan = (f"delete the {len(live)} live webhook secrets of client {args.client_id!r}: its webhooks "
                "are held until a gateway started with it configured makes it a new one")
        if (code := withheld(args, plan)) is not None:
            return code
        with engine.begin() as conn:
            deleted = webhook_secrets.delete_client(conn, args.client_id)
    finally:
        engine.dispose()
    print(f"deleted {deleted} webhook secrets of client {args.client_id}")
    if configured is None:
        print(f"lotlens-admin: LOTLENS_CLIENTS is not set here, so whether client {args.client_id!r} is "
              "still configured was not checked: if it is, its webhooks wait until a gateway started "
              "with it (restart them) makes it a new secret", file=sys.stderr)
    return 0


def _known(conn: Connection, client_id: str) -> bool:
    """Whether the client is one of ours: the gateway gives every configured client a current
    secret (at its start), so a client without one is a typo (making
    one for it printed a live secret for nobody, and rotating nobody left the real client's
    leaked secret signing)."""
    return bool(webhook_secrets.live(conn, client_id, utc_now()))


def _unknown(client_id: str, what: str) -> int:
    print(f"lotlens-admin: client {client_id!r} {what}; nothing was changed (`lotlens-admin clients "
          "list` shows the clients; the gateway makes a configured client's secret at its start)",
          file=sys.stderr)
    return 1


# A year: longer is no rotation at all (and past `timedelta`'s range it was a traceback).
MAX_OVERLAP_HOURS = 24 * 365


def _overlap_hours(text: str) -> float:
    value = float(text)
    if not 0 <= value <= MAX_OVERLAP_HOURS:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_OVERLAP_HOURS} hours, not {text}")
    return value


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `clients list|secret|rotate|delete`."""
    parser = groups.add_parser("clients", help="clients' webhook signing secrets (whsec_…)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="every live secret, masked, with when it stops signing and "
                                  "where its client comes from (LOTLENS_CLIENTS or the database only), and "
                                  "configured clients with no secret yet")
    listing.set_defaults(handler=_list)
    secret = commands.add_parser("secret", help="print a client's current secret")
    secret.add_argument("client_id")
    secret.set_defaults(handler=_secret)
    rotate = commands.add_parser("rotate",
                                 help="make a new current secret; the old one signs for the overlap")
    rotate.add_argument("client_id")
    rotate.add_argument("--overlap-hours", type=_overlap_hours, default=24.0,
                        help="how long the previous secret keeps signing (default 24)")
    rotate.set_defaults(handler=_rotate)
    delete = commands.add_parser(
        "delete", help="delete every secret of a client no longer configured; refused for one in this "
        "environment's LOTLENS_CLIENTS (a gateway started with it would make it a new secret, its "
        "webhooks held until then); asks first (--yes without a terminal)")
    delete.add_argument("client_id")
    add_flags(delete)
    delete.set_defaults(handler=_delete)
