"""The shard life cycle as decisions: what to do next, from what is known. No I/O.

    waiting lots ─claim─▶ building shard ─create batch─▶ submitted ─batch finished─▶ collected
                            │  (crash: recovery adopts the batch found by metadata, or builds)
                            └─ no lots left ─▶ empty

A submitted shard's batch is read by id each round. A running batch is waited on, or cancelled
when its job was cancelled or it outlived `max_age_s`; a finished one is collected; one still
`cancelling` an hour after the cancel, or still running (whatever its status) an hour past its
age, is given up on (its lots go again, its files at OpenAI are deleted). A batch that
cannot be read by id (401/403/404) is looked up by its metadata instead, and the stage submits
nothing until the listing tells what became of it: a rotated key or a wrong project must not pay
for the whole job twice. A listing that shows none of our batches created before it tells
nothing: the shard then holds the stage paused until an operator releases it (`lotlens-admin
shards release`), deciding that its lots are sent again or failed, and the stage carries that out
(`stage/release.py`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# OpenAI batch statuses (openapi.yaml, Batch.status). A status outside both (one the API may add)
# is taken as running: taken as finished, the lots it had not answered yet were sent again.
RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
# A batch we can no longer read by id for these reasons may still exist and still be running.
NOT_READABLE = frozenset({401, 403, 404})
# An operator's decisions on a shard whose batch cannot be read, and the batch status of a shard
# closed by carrying one out.
RESEND, FAIL = "resend", "fail"
RELEASES = (RESEND, FAIL)
RELEASED = "released"
# OpenAI's Batch guide: a batch is `cancelling` for up to 10 minutes before it is `cancelled`.
# One still cancelling long after is given up on: its lots go again. So is one still running this
# long past its age: cancelled at every poll since, it has not stopped (OpenAI has had batches
# stuck in `finalizing`, and refuses to cancel a batch it cannot with a 409).
CANCELLING_LIMIT_S = 3600.0
# A create answered with a timeout or a 5xx (or cut by a crash) may have made its batch, and it may
# land after the answer: the shard is not built again until the listing has had this long to show
# it (beyond `OPENAI_TIMEOUT_S`'s 120 s). Built at the next watch, the first batch landed after
# the second was made, was cancelled as a duplicate, and OpenAI billed what it had run.
CREATE_LANDS_S = 600.0
# Meanwhile its shard's batches are listed at most this often: listed at every watch (10 s), each
# waiting shard read up to 50 pages of the listing sixty times over.
LIST_WHILE_LANDING_S = 60.0


@dataclass(frozen=True)
class _Because:
    """A decision that carries its reason (for the log and the lots' errors)."""

    reason: str


@dataclass(frozen=True)
class Build:
    """No batch exists for the shard: write its file and create one."""


@dataclass(frozen=True)
class Adopt:
    """The shard's batch exists: put it on record (and never create a second one)."""

    batch: Mapping[str, Any]  # as OpenAI lists it


@dataclass(frozen=True)
class AwaitCreate:
    """A create whose outcome is unknown was asked lately: its batch may still land."""


@dataclass(frozen=True)
class CloseEmpty:
    """The shard holds no lot any more: close it."""


@dataclass(frozen=True)
class Wait:
    """The batch is running: look again next round."""

    status: str


class Cancel(_Because):
    """Ask OpenAI to cancel the batch; its finished lines are collected once it stops."""


@dataclass(frozen=True)
class Collect:
    """The batch finished: read its output and error files, settle every lot."""

    batch: Mapping[str, Any]


class AwaitOutput(_Because):
    """The batch finished but its output cannot be read yet: look again next round."""


class LookUp(_Because):
    """The batch cannot be read by id: find it by metadata, and pause submitting meanwhile."""


class TryLater(_Because):
    """Reading the batch failed for a passing reason (429, 5xx, timeout): next round."""


@dataclass(frozen=True)
class Lost(_Because):
    """Given up on: a listing that works does not show the batch, or it outlived every deadline.

    Its lots go back to waiting. `batch` is the batch as last read (None when no listing shows
    it): its files are deleted like a collected batch's, after what they answer is settled.
    """

    batch: Mapping[str, Any] | None = None


class Ignore(_Because):
    """Nothing to do with this batch."""


@dataclass(frozen=True)
class Shrink:
    """OpenAI refused the file as too large: its lots go back, and files are cut smaller."""

    max_bytes: int


@dataclass(frozen=True)
class CancelDuplicate:
    """A running batch whose lots are on record elsewhere: cancel it before it spends twice."""


def may_land(create_asked_age_s: float | None) -> bool:
    """Whether a create asked this long ago (None: none whose outcome is unknown) may still make
    its batch."""
    return create_asked_age_s is not None and create_asked_age_s < CREATE_LANDS_S


def for_building(lots_left: int, found: Mapping[str, Any] | None, create_asked_age_s: float | None
                 ) -> Build | Adopt | CloseEmpty | AwaitCreate:
    """A shard left `building` by a builder that died or failed: adopt its batch (the newest one
    found by its metadata) if one exists; wait while one asked `create_asked_age_s` ago may land."""
    if found is not None:
        return Adopt(found)
    if not lots_left:
        return CloseEmpty()
    return AwaitCreate() if may_land(create_asked_age_s) else Build()


def for_submitted(batch: Mapping[str, Any], job_cancelled: bool, now_s: float,
                  max_age_s: float) -> Wait | Cancel | Collect | Lost:
    """A recorded batch as OpenAI shows it now."""
    status = str(batch["status"])
    if status in FINISHED:
        return Collect(batch)
    created = batch.get("created_at")
    age_s = now_s - created if isinstance(created, int | float) else None
    if age_s is not None and age_s > max_age_s + CANCELLING_LIMIT_S:
        # Whatever its status: one that refuses every cancel was otherwise cancelled for good.
        return Lost(f"still {status} {age_s / 3600:.1f} h after it was created (cancelled past "
                    f"{max_age_s / 3600:.2f} h)", batch)
    since = batch.get("cancelling_at")
    if status == "cancelling" and isinstance(since, int | float) and now_s - since > CANCELLING_LIMIT_S:
        return Lost(f"still cancelling {(now_s - since) / 3600:.1f} h after the cancel", batch)
    if status != "cancelling":
        if job_cancelled:
            return Cancel("its job was cancelled")
        if age_s is not None and age_s > max_age_s:
            return Cancel(f"older than {max_age_s / 3600:.2f} h")
    return Wait(status)


def for_missing_output(batch: Mapping[str, Any], now_s: float, wait_s: float) -> AwaitOutput | None:
    """A finished batch whose output file is not shown (no `output_file_id`) or not readable (404):
    wait for it while its counts say lines were answered and it finished under `wait_s` ago.

    OpenAI has shown batches `completed` with `output_file_id` still null for a moment
    (BerriAI/litellm#37713). Collected at once, every lot it had answered went again, paid twice
    (up to 50,000 lots). Past `wait_s` the file is taken as gone (deleted from the dashboard, past
    its 30 days) and its lots go again. None: collect now.
    """
    status = str(batch.get("status"))
    answered = (batch.get("request_counts") or {}).get("completed") or 0
    if status not in FINISHED or not answered:
        return None
    finished = batch.get(f"{status}_at") or batch.get("created_at")
    if not isinstance(finished, int | float) or now_s - finished >= wait_s:
        return None
    return AwaitOutput(f"{status} with {answered} lines answered, but its output cannot be read yet "
                       f"({now_s - finished:.0f} s after it finished; waited for up to {wait_s:.0f} s)")


def for_read_error(status_code: int | None, message: str) -> LookUp | TryLater:
    """Reading a recorded batch by id failed."""
    if status_code in NOT_READABLE:
        return LookUp(message)
    return TryLater(message)


def for_listing(listed: Sequence[Mapping[str, Any]], batch_id: str, ours: Collection[str],
                claimed_at: float, job_cancelled: bool, now_s: float, max_age_s: float
                ) -> Wait | Cancel | Collect | Lost | LookUp:
    """What a listing of the stage's batches tells about one that could not be read by id.

    `ours`: the listed batch ids some shard has on record; `claimed_at`: when the unreadable
    batch's shard was claimed (a Unix time; its batch was created after), or when its batch was
    created if that is earlier (a batch the reconciler adopted into a shard made for it). Absent
    from a listing that shows a batch of ours created before it, it is gone (the key sees the
    project it was created in) and its lots are sent again. A batch of ours created since proves
    nothing: a key of another project (rotated, a restart) creates batches there too, and one made
    a moment ago took the running batch for lost, which OpenAI then ran and billed twice. Absent
    otherwise, its fate is unknown, and we keep waiting.
    """
    mine = [batch for batch in listed if str(batch.get("id")) == batch_id]
    if mine:
        return for_submitted(mine[0], job_cancelled, now_s, max_age_s)
    # OpenAI dates a batch in whole seconds (rounded down): one dated before the claim's second
    # was surely created before it.
    before = math.floor(claimed_at)
    if any(str(batch.get("id")) in ours and _created_before(batch, before) for batch in listed):
        return Lost(f"OpenAI lists batches of ours created before {batch_id} but not it")
    return LookUp(f"the listing shows none of our batches created before {batch_id}, so not "
                  "whether it exists")


def _created_before(batch: Mapping[str, Any], second: int) -> bool:
    created = batch.get("created_at")
    return isinstance(created, int | float) and created < second


def for_unknown_batch(batch: Mapping[str, Any], shard_status: str | None,
                      job_known: bool) -> Ignore | Adopt | CancelDuplicate:
    """A batch with this stage's metadata that no shard has on record (the reconciler)."""
    if not job_known:
        return Ignore("a job these tables never saw (another deployment may share the organisation)")
    if shard_status == "building":
        return Ignore("its shard is building: recovery adopts it by its metadata")
    if shard_status is None:
        return Adopt(batch)
    return for_duplicate(batch)


def for_duplicate(batch: Mapping[str, Any]) -> Ignore | CancelDuplicate:
    """A batch whose lots are on record elsewhere: cancel it while it can still spend."""
    if batch.get("status") in FINISHED | {"cancelling"}:
        return Ignore("finished or already stopping: nothing left to save")
    return CancelDuplicate()


def too_large(code: str | None, message: str) -> bool:
    """Whether an upload or batch error says the input file is too large."""
    return code == "file_too_large" or "too large" in message.lower()


def refused_whole(errors: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a failed batch's errors say it was refused as a whole before any request ran: the
    organisation's enqueued tokens were full, or its file too large. Its lots were not tried."""
    return bool(errors) and all(
        error.get("code") == "token_limit_exceeded" or too_large(error.get("code"), str(error.get("message")))
        for error in errors)


def for_oversized(file_bytes: int) -> Shrink:
    """A file refused for its size: the next ones get at most half of it."""
    return Shrink(max(file_bytes // 2, 1))
