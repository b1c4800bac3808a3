"""What a rebuild's shadow holds besides the tables: which projection code made its rows, and the
events it skipped, kept in the shadow schema and committed with each batch like the checkpoint.

A later run resumes the shadow: it must not mix another release's rows into it, and it must not
forget what an earlier run skipped (the skipped count was each run's own, so a resumed run with
nothing left to replay swapped a shadow that lacked events, saying 0 skipped).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text

import lotlens_result_store
from lotlens_common import envelope, events
from lotlens_common.db import json_rows
from lotlens_result_store.shadow import SHADOW

STATE = f"{SHADOW}.rebuild_state"
SKIPPED = f"{SHADOW}.rebuild_skipped"


def projection_version() -> str:
    """A digest of the code that turns events into rows: the result-store's modules and the event
    models with their upcasters. Any change to them is another version (conservative: a changed
    comment too, and the price is a rebuild started over)."""
    digest = hashlib.sha256()
    package = Path(lotlens_result_store.__file__).parent
    for path in [*sorted(package.glob("*.py")), Path(envelope.__file__), Path(events.__file__)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Skipped:
    """An event the shadow lacks: where it is in the log and why."""

    position: str  # topic:partition:offset
    why: str


def create_state(conn: Connection) -> None:
    """The state tables of a new shadow, stamped with this code's projection version."""
    conn.execute(text(f"CREATE TABLE {STATE} (projection_version text NOT NULL, "
                      "created_at timestamptz NOT NULL DEFAULT now())"))
    conn.execute(text(f"INSERT INTO {STATE} (projection_version) VALUES (:v)"), {"v": projection_version()})
    conn.execute(text(f'CREATE TABLE {SKIPPED} (topic text NOT NULL, partition int NOT NULL, '
                      '"offset" bigint NOT NULL, why text NOT NULL, '
                      'PRIMARY KEY (topic, partition, "offset"))'))


def shadow_version(conn: Connection) -> str | None:
    """The projection version that made the shadow's rows (None: made by a release before it
    was recorded)."""
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": STATE}).scalar() is None:
        return None
    return str(conn.execute(text(f"SELECT projection_version FROM {STATE}")).scalar_one())


def foreign_shadow(conn: Connection) -> str | None:
    """Why the shadow cannot be resumed by this code (None: it can)."""
    made, this = shadow_version(conn), projection_version()
    if made == this:
        return None
    made_by = f"projection code {made}" if made else "an older release (version not recorded)"
    return (f"the shadow's rows were projected by {made_by}, this is {this}: resuming would mix "
            "the two; start over with --restart")


def record_skipped(conn: Connection, skipped: list[tuple[str, int, int, str]]) -> None:
    """Remember skipped events (topic, partition, offset, why) in the caller's batch transaction."""
    if skipped:
        conn.execute(text(
            f"INSERT INTO {SKIPPED} SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "AS v(topic text, partition int, \"offset\" bigint, why text) ON CONFLICT DO NOTHING"),
            {"rows": json_rows({"topic": t, "partition": p, "offset": o, "why": why}
                               for t, p, o, why in skipped)})


def skipped_events(conn: Connection) -> list[Skipped]:
    """Every event the shadow lacks, in log order."""
    rows = conn.execute(text(f'SELECT topic, partition, "offset", why FROM {SKIPPED} '
                             'ORDER BY topic, partition, "offset"')).all()
    return [Skipped(f"{topic}:{partition}:{offset}", str(why)) for topic, partition, offset, why in rows]
