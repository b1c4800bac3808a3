"""Announcing the terminal jobs that no consumer batch will announce.

After each batch `publish_completions` announces the jobs that batch touched and found terminal
and unannounced (`settle_jobs`). Two kinds of terminal job are touched by none: one a previous
run settled and then died before announcing (swept at start), and one that a rebuild's swap
brought in. `projections rebuild` replays the log with fixed projection code and so finishes
jobs the live tables left unfinished (an event the old code dead-lettered), and no event may ever
come for them again.

The rebuild does not announce them itself: JobCompleted is the result-store's (its producer, its
topic, its row locks), and a rebuild killed between its swap and its announcements would leave
them unannounced for good. Each result-store instance instead watches which table the name
`jobs` resolves to, and sweeps when a swap changed it. Two instances sweeping at once announce a
job once (`publish_completions` locks the rows and reads `completion_published` again); one
killed mid-sweep leaves the rest to the next start's sweep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Engine, text

from lotlens_common.kafka import TRANSIENT_ERRORS
from lotlens_common.ops import heartbeat, loop_ended
from lotlens_common.producer import EventProducer
from lotlens_result_store.completion import publish_completions, unannounced_jobs

log = logging.getLogger(__name__)

SWAP_WATCH = "swap-watch"  # its heartbeat on `/livez`


def announce(engine: Engine, producer: EventProducer, topic: str,
             job_ids: Collection[str] | None = None) -> int:
    """`publish_completions` (of `job_ids`, or every unannounced job), where a defect announcing
    one job holds back no other; returns how many were announced.

    Outages are raised, to be retried. Any other failure (building or publishing one job's
    JobCompleted) is a defect: each job is then tried alone, and one that still fails is logged
    and left unannounced for the next sweep (a deploy's start, a swap). Raised, it failed the
    consumer batch whose projection had committed, dead-lettering its applied events, and it
    stopped the service at every start.
    """
    try:
        return publish_completions(engine, producer, topic, job_ids)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.warning("announcing jobs failed (%s); announcing them one by one", exc)
    announced = 0
    for job_id in sorted(job_ids) if job_ids is not None else unannounced_jobs(engine):
        try:
            announced += publish_completions(engine, producer, topic, [job_id])
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            log.exception("JobCompleted of job %s not published (a defect); it stays unannounced "
                          "until the next sweep (the service's next start)", job_id,
                          extra={"job_id": job_id})
    return announced


def read_models_in_place(engine: Engine) -> int:
    """Which `jobs` table the services' table names resolve to now (a swap puts another there)."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT CAST(to_regclass('jobs') AS oid)")).scalar_one())


@dataclass(frozen=True)
class Swept:
    """What a sweep covered: the read models in place when it began, and the jobs it announced."""

    tables: int
    announced: int


def sweep(engine: Engine, producer: EventProducer, topic: str, stop: threading.Event) -> Swept:
    """At startup: announce every terminal job a previous run left unannounced (retrying while
    the database or the broker is down)."""
    delay = 0.5
    while True:
        try:
            # Read before the sweep: a swap after this point is swept again by `watch_swaps`.
            tables = read_models_in_place(engine)
            return Swept(tables, announce(engine, producer, topic))
        except TRANSIENT_ERRORS as exc:
            if stop.is_set():  # a stop is no failure (it exited 1): the next start sweeps again
                log.info("stopping before the startup sweep could run (%s): the next start runs it", exc)
                return Swept(tables=0, announced=0)  # stopping: nothing watches the tables
            log.warning("startup sweep failed, retrying in %.1fs: %s", delay, exc)
            stop.wait(delay)
            delay = min(delay * 2, 15.0)


def watch_swaps(engine: Engine, producer: EventProducer, topic: str, stop: threading.Event,
                every_s: float, swept: int) -> None:
    """Until `stop`: every `every_s`, announce the terminal jobs not yet announced once the read
    models in place are no longer the ones `swept` (a rebuild swapped its tables in).

    Each round beats `/livez`'s `swap-watch`; ended by anything its rounds do not catch, the watch
    fails `/livez` at once, and the restarted process's start-up sweep announces what it would
    have. Unwatched, it ended in silence (a `SystemExit` without even a traceback) and `/livez`
    stayed alive: every job a later rebuild finished went unannounced, no webhook, until a restart.
    """
    heartbeat(SWAP_WATCH)
    try:
        while not stop.wait(every_s):
            heartbeat(SWAP_WATCH)
            try:
                tables = read_models_in_place(engine)
                if tables != swept:
                    announced = announce(engine, producer, topic)
                    log.info("read models swapped in by a rebuild: announced %d jobs they hold finished",
                             announced)
                    swept = tables
            except Exception as exc:  # the next check tries again; the watch must outlive an outage
                log.warning("sweep after a swap of the read models failed, retrying in %.0fs: %s",
                            every_s, exc, exc_info=not isinstance(exc, TRANSIENT_ERRORS))
    finally:
        if not stop.is_set():
            log.critical("the swap watch ended: jobs a rebuild's swap finishes stay unannounced until "
                         "this process restarts (/livez fails)")
            loop_ended(SWAP_WATCH)
