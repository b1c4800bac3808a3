"""What a rebuild's shadow holds besides the tables: which projection code made its rows, and the
events it skipped, kept in the shadow schema and committed with each batch like the checkpoint.

A later run resumes the shadow: it must not mix another release's rows into it, and it must not
forget what an earlier run skipped (the skipped count was each run's own, so a resumed run with
nothing left to replay swapped a shadow that lacked events, saying 0 skipped).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text

from lotlens_common.row_sets import json_rows
from lotlens_result_store.shadow import SHADOW

STATE = f"{SHADOW}.rebuild_state"
SKIPPED = f"{SHADOW}.rebuild_skipped"


# The modules whose code decides what the read models' rows hold, live and in a rebuild alike:
# their digest is the projection version. Hashing the whole package once left out modules of
# lotlens_common that shape rows and put in ones that shape none (the rebuild's own, the metrics),
# so editing those forced --restart. tests/unit/test_result_store_projection_version.py fails when
# one of these imports a LotLens module that is in neither list.
PROJECTION_MODULES = (
    "lotlens_result_store.handlers",      # apply_batch: the projection, the rebuild's entry too
    "lotlens_result_store.projections",   # each event's rows
    "lotlens_result_store.running",       # the lots a vision result, translation or failure writes in place
    "lotlens_result_store.changes",       # which jobs an event moves, and to what
    "lotlens_result_store.status",        # the job status rules and failure messages
    "lotlens_result_store.completion",    # a job settled: its status, counts and usage
    "lotlens_result_store.grouping",      # which of a lot's or job's events counts
    "lotlens_result_store.sql",           # the statements that write the rows
    "lotlens_result_store.copy_texts",    # the description rows a batch COPYs
    "lotlens_result_store.usage",         # the token usage rows and jobs.usage
    "lotlens_result_store.webhooks",      # the webhook delivery rows
    "lotlens_common.envelope",            # decoding and upcasting the log's events
    "lotlens_common.events",              # the event models
    "lotlens_common.uuids",               # the ids of derived events (envelope.caused)
    "lotlens_common.model.usage",         # JobUsage.of: the jobs.usage document
    "lotlens_common.tables",              # the read models' columns
    "lotlens_common.row_sets",            # json_rows, copy_row, append_rows: how values are written
)
# Imported by those modules, or beside them in the package, yet shaping no row: an edit to them
# keeps an unfinished rebuild resumable.
NOT_PROJECTION = {
    "lotlens_result_store.metrics": "counts the statements it passes on unchanged",
    "lotlens_result_store.replay": "reads the log into handlers.apply_batch; skips are recorded",
    "lotlens_result_store.rebuild": "the rebuild's steps around the projection",
    "lotlens_result_store.shadow": "the shadow schema and the swap",
    "lotlens_result_store.shadow_state": "this: the shadow's version and skipped events",
    "lotlens_result_store.config": "the service's settings",
    "lotlens_result_store.sweeps": "announces jobs the read models hold finished; writes no projected row",
    "lotlens_result_store.__main__": "the service's wiring",
    "lotlens_common.clock": "the wall clock",
    "lotlens_common.kafka": "which broker errors are retried",
    "lotlens_common.producer": "publishes JobCompleted; writes no row",
    "lotlens_common.tracing": "spans",
    "lotlens_common.sql_tracing": "spans around statements",
    "lotlens_common.settings": "connection settings",
    "lotlens_common.db": "the engine, migrations and the job lock (`job_lock`)",
}


def projection_version() -> str:
    """A digest of the code that turns events into rows (PROJECTION_MODULES). Any change to it is
    another version (conservative: a changed comment too, and the price is a rebuild started over)."""
    digest = hashlib.sha256()
    for module in PROJECTION_MODULES:
        path = Path(str(importlib.import_module(module).__file__))
        digest.update(module.encode() + b"\0" + path.read_bytes())
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
