"""`projections rebuild`: the read models rebuilt from the record topics while the live ones serve.

1. a shadow schema with empty copies of the read models (or the one an interrupted run left);
2. replay up to the end offsets seen at start, then catch up round after round until the gap is
   under `lock_gap` events;
3. lock the live tables against writes, replay the last events, swap the tables in that same
   transaction (docs/EVENT_LOG.md says why the live result-store then carries on unharmed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_result_store.replay import Progress, RecordLog, replay
from lotlens_result_store.shadow import (
    create_shadow,
    drop_shadow,
    live_schema,
    lock_live,
    shadow_exists,
    swap,
)


@dataclass(frozen=True)
class RebuildOptions:
    """How a rebuild runs."""

    restart: bool = False  # forget an interrupted rebuild's progress
    swap: bool = True  # False: stop once caught up, leaving the shadow tables to inspect
    batch_size: int = 2000
    # The live tables are locked only once fewer events than this are left to replay.
    lock_gap: int = 5000
    max_rounds: int = 20
    lock_timeout_s: float = 60.0


@dataclass(frozen=True)
class RebuildResult:
    """What a rebuild did."""

    events: int
    skipped: int
    swapped: bool


Say = Callable[[str], None]


def rebuild(engine: Engine, kafka: KafkaSettings, topics: TopicSettings, options: RebuildOptions,
            say: Say) -> RebuildResult:
    """Rebuild the read models from the record topics; see the module's docstring."""
    with engine.begin() as conn:
        live = live_schema(conn)
        if options.restart:
            drop_shadow(conn)
        if shadow_exists(conn):
            say("resuming the rebuild an earlier run left in the shadow schema")
        else:
            create_shadow(conn, live)
    record = RecordLog(kafka, topics.record_topics())
    events = skipped = 0

    def run(phase: str) -> Progress:
        nonlocal events, skipped
        progress = replay(engine, record, record.watermarks(), options.batch_size,
                          lambda p: say(f"{phase}: {p.line()}"))
        events, skipped = events + progress.done, skipped + progress.skipped
        return progress

    for round_ in range(options.max_rounds):
        progress = run("replay" if round_ == 0 else f"catch-up {round_}")
        if progress.total <= options.lock_gap:
            break
    if not options.swap:
        say("caught up; the live tables were left in place (--no-swap)")
        return RebuildResult(events, skipped, swapped=False)
    with engine.connect() as lock_conn, lock_conn.begin():
        say("locking the live read models against writes")
        lock_live(lock_conn, live, options.lock_timeout_s)
        run("final")  # on other connections: committed before the swap, visible to whoever waited
        swap(lock_conn, live)
    say(f"swapped in: {events:,} events replayed, {skipped} skipped; "
        "the old tables are in schema lotlens_retired")
    return RebuildResult(events, skipped, swapped=True)
