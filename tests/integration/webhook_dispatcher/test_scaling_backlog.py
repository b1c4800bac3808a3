"""The webhook-dispatcher's PostgreSQL trigger (deploy/k8s): its query, as `kustomize build` renders
it, run on the delivery schedule as the dispatcher writes and claims it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text, update

from lotlens_common.clock import utc_now
from lotlens_common.tables import dispatch_queue as q
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.claims import Room, claim
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import CLIENT
from tests.k8s import TARGETS, objects, one

pytestmark = pytest.mark.integration


def scaler_query(target: str) -> str:
    """The query of the dispatcher's `postgresql` trigger in a target's manifests."""
    scaled = one(objects(target), "ScaledObject", "lotlens-webhook-dispatcher")
    [trigger] = [t for t in scaled["spec"]["triggers"] if t["type"] == "postgresql"]
    return str(trigger["metadata"]["query"])


def backlog(db: Engine, target: str = "base") -> int:
    """What KEDA reads: the query's one number."""
    with db.connect() as conn:
        return int(conn.execute(text(scaler_query(target))).scalar_one())


def test_the_dispatcher_scales_on_the_deliveries_due_for_a_first_attempt_that_no_instance_holds(
        db: Engine) -> None:
    # KEDA scaled the dispatcher on its group's lag alone: one JobCompleted (a lag of one message,
    # consumed in a second) schedules a delivery per webhook URL, 50,000 for a job with a URL per
    # lot, and one replica sent them 64 at a time (4 per host) while KEDA kept it alone.
    now = utc_now()
    urls = {f"https://hooks.example.com/lots/{n}": 1 for n in range(6)}
    with db.begin() as conn:
        dispatch_queue.schedule(conn, new_id("job-"), CLIENT, urls, now)
        dispatch_queue.schedule(conn, new_id("job-"), CLIENT, {"https://hooks.example.com/later": 1},
                                now + timedelta(minutes=5))
    assert {target: backlog(db, target) for target in TARGETS} == dict.fromkeys(TARGETS, 6)

    with db.begin() as conn:  # an instance takes two: they are under way, no longer waiting
        claimed = claim(conn, utc_now(), Room(slots=2, per_host=4, per_client=16), lease_s=120.0)
    assert len(claimed) == 2 and backlog(db) == 4

    # Work more replicas do not speed up: a retry waits out its backoff or hits a receiver that
    # failed it (more replicas only hit it harder), a delivery held back for a missing key or
    # secret or a job not projected yet (`unready_since`) waits for that, not for a replica.
    waiting = [url for url in urls if url not in {d.webhook_url for d in claimed}]
    with db.begin() as conn:
        conn.execute(update(q).where(q.c.webhook_url == waiting[0]).values(attempt_count=1))
        conn.execute(update(q).where(q.c.webhook_url == waiting[1]).values(unready_since=now))
    assert backlog(db) == 2
