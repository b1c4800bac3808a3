"""The migrate Job's limits, as `kustomize build` renders them, fit the runner's lock patience: a
migration blocked by a long transaction is tried `backoffLimit + 1` times before the Job fails."""

from __future__ import annotations

import pytest

from lotlens_common.db import LockPatience
from tests.k8s import TARGETS, Doc, objects, one

# Kubernetes waits 10 s before recreating a Job's failed pod, doubling each time, at most 6 minutes.
FIRST_BACKOFF_S, MAX_BACKOFF_S = 10, 360
# Scheduling, pulling the image and starting Python, for each attempt.
POD_START_S = 60


def pod_backoffs_s(retries: int) -> int:
    """How long the Job controller waits, in all, between `retries + 1` failed pods."""
    return sum(min(FIRST_BACKOFF_S * 2**n, MAX_BACKOFF_S) for n in range(retries))


@pytest.fixture(scope="module", params=TARGETS)
def migrate_job(request: pytest.FixtureRequest) -> Doc:
    return one(objects(request.param), "Job", "lotlens-migrate")


def test_every_retry_of_a_migration_blocked_by_a_lock_fits_in_the_jobs_deadline(migrate_job: Doc) -> None:
    # At 900 s the first attempt gave up at 600 s, the second was killed at 900 s and there was
    # no third: the Job failed with 5 of its 6 retries unused, and the new release's pods stayed
    # in Init until someone deleted the Job and applied again, though the blocker had long ended.
    spec = migrate_job["spec"]
    attempts = spec["backoffLimit"] + 1
    needed = attempts * (LockPatience().give_up_after_s + POD_START_S) + pod_backoffs_s(attempts - 1)
    assert spec["activeDeadlineSeconds"] >= needed, (spec["activeDeadlineSeconds"], needed)
    # A concurrent index build waits for older transactions without a lock timeout: only the
    # deadline ends that wait, so it stays within one more attempt of what the retries need.
    assert spec["activeDeadlineSeconds"] <= needed + LockPatience().give_up_after_s


def test_a_migration_failing_at_once_is_retried_a_few_minutes_not_once(migrate_job: Doc) -> None:
    # A fresh cluster's PostgreSQL or Kafka may come up minutes after the Job starts.
    assert pod_backoffs_s(migrate_job["spec"]["backoffLimit"]) >= 300
