"""What LotLens reports as used against what the stand-in billed: each lot's tokens per stage (the
`usage` of its VisionCompleted, TranslationCompleted or LotFailed, kept in `lots.usage`) equal the
tokens of every 200 line the stand-in answered for that lot at that stage, and each finished job's
total (`jobs.usage`, carried by JobCompleted, shown in the job's status and summed into the token
metrics) equals the sum billed for its lots. A billed answer LotLens dropped, counted twice or put
on another lot shows as a difference; tokens are compared, not cost (a price table's matter).

Both sides are read at one moment, once they stopped moving: a cancelled job's usage keeps growing
after its JobCompleted (the lots already in batches get their answers, summed again by the
result-store's `refresh_cancelled_usage`). Its billed answers are final once the stand-in ended
each of its batches, and LotLens's once the stage collected each (published its outcomes) and the
result-store consumed what was published by then. A job still moving at the deadline is reported
as not checked, never compared half-way nor skipped."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine, select

from chaos.recovery import Backlog
from chaos.spend import RUNNING_BATCH, SHOWN, PaidBatch, paid_batches
from chaos.stack import STANDIN_KEY, ChaosStack
from lotlens_common.settings import RESULT_STORE_GROUP
from lotlens_common.stage.record import JOB_KEY, STAGE_KEY
from lotlens_common.tables import jobs, lots, stage_shards

# (input, output, reasoning): the stand-in bills these; cached input is always 0 there.
Tokens = tuple[int, int, int]
NONE: Tokens = (0, 0, 0)
KINDS = ("input_tokens", "output_tokens", "reasoning_tokens")
# A stage's shard whose batch it has not collected yet (its outcomes not published).
UNCOLLECTED = ("building", "submitted")


def billed(paid: Iterable[PaidBatch]) -> dict[tuple[str, str, str], Tokens]:
    """Tokens the stand-in billed by (job, lot, stage): its 200 lines', every batch counted."""
    found: dict[tuple[str, str, str], Tokens] = defaultdict(lambda: NONE)
    for batch in paid:
        stage, job = batch.meta(STAGE_KEY, JOB_KEY)
        for lot, answer in batch.answers.items():
            if answer["status"] == 200:
                found[(job, lot, stage)] = _add(found[(job, lot, stage)], tuple(answer["tokens"]))
    return found


def unsettled(paid: Iterable[PaidBatch], uncollected: Collection[str],
              cancelled: Collection[str]) -> dict[str, str]:
    """The cancelled jobs whose usage may still change, each with why: a batch of theirs the
    stand-in still runs (more lines to bill), or one it ended that the stage has not collected
    (`uncollected`: their batch ids; answers billed, not yet reported)."""
    found: dict[str, str] = {}
    for batch in paid:
        stage, job = batch.meta(STAGE_KEY, JOB_KEY)
        batch_id, status = batch.batch["id"], batch.batch["status"]
        if job in cancelled and status in RUNNING_BATCH:
            found.setdefault(job, f"its {stage} batch {batch_id} is still {status} at the stand-in")
        elif job in cancelled and batch_id in uncollected:
            found.setdefault(job, f"its {stage} batch {batch_id} ended {status} but the stage has not "
                                  f"collected it")
    return found


def settled_usage(stack: ChaosStack, engine: Engine, finished: Collection[str], cancelled: Collection[str],
                  timeout_s: float) -> tuple[list[PaidBatch], dict[tuple[str, str], Any], dict[str, Any],
                                             dict[str, str]]:
    """What the stand-in billed and what LotLens reports, read together once no cancelled job's
    usage can change any more (`unsettled`), or at the deadline: (paid, lot usage, job usage, the
    jobs still unsettled then, with why)."""
    deadline = time.monotonic() + timeout_s
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    group = f"{stack.name}.{RESULT_STORE_GROUP}"
    while True:
        paid = paid_batches(stack.standin_url, STANDIN_KEY)
        moving = unsettled(paid, _uncollected(engine, cancelled), cancelled)
        # A job that was not cancelled ended with every lot: its usage was final when announced.
        if not moving and (not cancelled or _projected(admin, group, deadline)):
            return paid, *read_usage(engine, finished), {}
        if time.monotonic() > deadline:
            return paid, *read_usage(engine, finished), moving or {
                job: "the result-store had not consumed its collected answers" for job in cancelled}
        time.sleep(1)


def _uncollected(engine: Engine, job_ids: Collection[str]) -> set[str]:
    """Batch ids of these jobs' shards their stage has not collected yet."""
    s = stage_shards.c
    with engine.connect() as conn:
        return set(conn.execute(select(s.batch_id).where(
            s.job_id.in_(list(job_ids)), s.status.in_(UNCOLLECTED), s.batch_id.is_not(None))).scalars())


def _projected(admin: AdminClient, group: str, deadline: float) -> bool:
    """Whether the result-store consumed everything published until now (the stages' outcomes of
    the batches they collected), within the deadline."""
    with contextlib.suppress(KafkaException, TimeoutError):  # a broker not answering: asked again
        backlog = Backlog.now(admin, [group])
        while backlog.behind(admin):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True
    return False


def usage_breaches(paid: Iterable[PaidBatch], lot_usage: Mapping[tuple[str, str], Any],
                   job_usage: Mapping[str, Any], finished: Collection[str] = (),
                   unchecked: Mapping[str, str] | None = None) -> list[str]:
    """Differences between billed and reported tokens, for the jobs of `job_usage` (announced ones:
    their usage is summed when they finish) and their lots in `lot_usage` ((job, lot) -> usage per
    stage, as in `lots.usage`); each job of `finished` (terminal) never announced, so that its
    usage went unchecked rather than silently passing; and each job of `unchecked` (job -> why: a
    cancelled job whose usage was still changing) as not checked, not compared half-way."""
    unchecked = unchecked or {}
    unannounced = [f"job {job} is finished but its usage was never summed (no JobCompleted)"
                   for job in sorted(finished) if job not in job_usage]
    moving = [f"usage of cancelled job {job} not checked: {why}" for job, why in sorted(unchecked.items())]
    job_usage = {job: usage for job, usage in job_usage.items() if job not in unchecked}
    bill = {key: tokens for key, tokens in billed(paid).items() if key[0] in job_usage}
    reported = {(job, lot, stage): _tokens(usage) for (job, lot), stages in lot_usage.items()
                if job in job_usage for stage, usage in (stages or {}).items()}
    lot_found = [f"lot {lot} of job {job}: {stage} usage {reported.get(key, NONE)}, the stand-in billed "
                 f"{bill.get(key, NONE)} (input, output, reasoning tokens)"
                 for key in sorted(bill.keys() | reported.keys())
                 for job, lot, stage in [key] if bill.get(key, NONE) != reported.get(key, NONE)]
    job_found = []
    for job, usage in sorted(job_usage.items()):
        want = _sum(tokens for (billed_job, _, _), tokens in bill.items() if billed_job == job)
        if _tokens(usage) != want:
            job_found.append(f"job {job}: usage {_tokens(usage)}, the stand-in billed {want} for its "
                             f"answers (input, output, reasoning tokens)")
    more = [f"{len(lot_found) - SHOWN} more lots' usage differs"] if len(lot_found) > SHOWN else []
    return unannounced + moving + job_found + lot_found[:SHOWN] + more


def read_usage(engine: Engine, job_ids: Iterable[str]) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """(job, lot) -> usage per stage, and job -> usage, of these jobs once finished (a job not
    finished, or finished before it had lots, has no usage summed yet and is left out)."""
    chosen = list(job_ids)
    with engine.connect() as conn:
        finished = {job: usage or {} for job, usage in conn.execute(
            select(jobs.c.job_id, jobs.c.usage).where(jobs.c.job_id.in_(chosen),
                                                      jobs.c.completion_published))}
        per_lot = {(job, lot): usage for job, lot, usage in conn.execute(
            select(lots.c.job_id, lots.c.lot_id, lots.c.usage).where(lots.c.job_id.in_(list(finished))))}
    return per_lot, finished


def _tokens(usage: Mapping[str, Any] | None) -> Tokens:
    found = usage or {}
    return (int(found.get(KINDS[0]) or 0), int(found.get(KINDS[1]) or 0), int(found.get(KINDS[2]) or 0))


def _add(left: Tokens, right: tuple[int, ...]) -> Tokens:
    return (left[0] + right[0], left[1] + right[1], left[2] + right[2])


def _sum(parts: Iterable[Tokens]) -> Tokens:
    total = NONE
    for part in parts:
        total = _add(total, part)
    return total
