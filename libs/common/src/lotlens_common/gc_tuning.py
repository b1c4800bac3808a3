"""The garbage collector's thresholds of every service, set by its `__main__` before its imports.

Standard library only: it runs ahead of the seconds of imports of a start-up, like `stopping`.
Importing a service allocates about a million objects that all live on (the openai SDK's types,
SQLAlchemy, the schemas); at the default threshold (700) the collector walked them 150-400 times
before `main` set these, 10-15% of the CPU a start takes (six processes start at once on two cores
in the e2e tests, and every pod start pays it too).
"""

from __future__ import annotations

import gc

# A 50,000-lot request or batch is about two million objects, alive for a second or two: with
# the default threshold (700 allocations) the collector walks them again and again while they
# are built (0.2 s of the gateway's intake). At 10,000, a consumer batch of a few thousand
# events still outlived the young collection and was walked again in the older ones: 4.4-4.6 of
# the services' CPU-seconds per 50,000-lot bench run went to the collector, 1.45 at 50,000.
# Cycles are still collected.
GC_THRESHOLDS = (50_000, 20, 10)
# A stage (vision-batcher, translator) holds a shard's lots, up to 50,000 with their work, their
# requests and then their answers' events, for the seconds it builds or collects them: a few hundred
# thousand objects that all outlived a 50,000 threshold and were walked 38-40 times a 50,000-lot
# job, 0.8-1.2 CPU-s, 12-16% of each stage's CPU. At a million they are gone before a collection
# (two in the whole bench run, both at start-up; peak RSS unchanged, 180-270 MB); the cycles a
# stage makes (few: a failed request's traceback) wait that much longer.
STAGE_GC_THRESHOLDS = (1_000_000, 20, 10)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Collect young objects every 50,000 allocations (a stage's every million) instead of 700."""
    gc.set_threshold(*thresholds)
