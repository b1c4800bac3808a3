"""What LotLens reports as used against what the stand-in billed: each lot's tokens per stage (the
`usage` of its VisionCompleted, TranslationCompleted or LotFailed, kept in `lots.usage`) equal the
tokens of every 200 line the stand-in answered for that lot at that stage, and each finished job's
total (`jobs.usage`, carried by JobCompleted, shown in the job's status and summed into the token
metrics) equals the sum billed for its lots. A billed answer LotLens dropped, counted twice or put
on another lot shows as a difference; tokens are compared, not cost (a price table's matter)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, select

from chaos.spend import SHOWN, PaidBatch
from lotlens_common.stage.record import JOB_KEY, STAGE_KEY
from lotlens_common.tables import jobs, lots

# (input, output, reasoning): the stand-in bills these; cached input is always 0 there.
Tokens = tuple[int, int, int]
NONE: Tokens = (0, 0, 0)
KINDS = ("input_tokens", "output_tokens", "reasoning_tokens")


def billed(paid: Iterable[PaidBatch]) -> dict[tuple[str, str, str], Tokens]:
    """Tokens the stand-in billed by (job, lot, stage): its 200 lines', every batch counted."""
    found: dict[tuple[str, str, str], Tokens] = defaultdict(lambda: NONE)
    for batch in paid:
        stage, job = batch.meta(STAGE_KEY, JOB_KEY)
        for lot, answer in batch.answers.items():
            if answer["status"] == 200:
                found[(job, lot, stage)] = _add(found[(job, lot, stage)], tuple(answer["tokens"]))
    return found


def usage_breaches(paid: Iterable[PaidBatch], lot_usage: Mapping[tuple[str, str], Any],
                   job_usage: Mapping[str, Any], finished: Collection[str] = ()) -> list[str]:
    """Differences between billed and reported tokens, for the jobs of `job_usage` (announced ones:
    their usage is summed when they finish) and their lots in `lot_usage` ((job, lot) -> usage per
    stage, as in `lots.usage`); and each job of `finished` (terminal) never announced, so that
    its usage went unchecked rather than silently passing."""
    unannounced = [f"job {job} is finished but its usage was never summed (no JobCompleted)"
                   for job in sorted(finished) if job not in job_usage]
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
    return unannounced + job_found + lot_found[:SHOWN] + more


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
