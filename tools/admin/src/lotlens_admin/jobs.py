"""`lotlens-admin jobs show <job_id>`: where a job's lots are stuck, on one screen (or `--json`).

Read-only: one REPEATABLE READ, READ ONLY transaction of reads (`job_report.py`), so one snapshot.
The text is for on-call, the JSON (the same facts, ages in seconds) for scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from lotlens_admin.job_report import OPEN_SHARDS, JobReport, PauseLine, ShardLine, StageLine, read_report
from lotlens_admin.sessions import admin_engine

LABEL = 12  # the width of the left column
ERROR_CHARS = 160  # of an error's text, on one line (`--json` has it whole)


def _show(args: argparse.Namespace) -> int:
    engine = admin_engine()
    try:
        # One snapshot for every read (READ COMMITTED let each query see rows committed after the
        # one before: a shard settling between them showed its lots twice or nowhere), and no write.
        with engine.connect() as conn:
            snapshot = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with snapshot.begin():
                report = read_report(snapshot, args.job_id)
    finally:
        engine.dispose()
    if not report.known:
        print(f"lotlens-admin: job {args.job_id!r} is unknown: not in the read models, the stages' "
              "work tables or the outbox", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print("\n".join(render(report)))
    return 0


def render(report: JobReport) -> list[str]:
    """The report as lines of text, a left column naming where each fact was read."""
    lines = [_row("job", report.job_id)]
    model = report.read_model
    if model is None:
        lines.append(_row("read model", "not projected yet (the result-store has no event of it)"))
    else:
        created = "" if model.age_s is None else f"created {age(model.age_s)} ago, "
        lines.append(_row("read model", f"{model.status}, lots {model.total_lots}: {_counts(model.lots)} "
                                        f"({created}changed {age(model.changed_s)} ago)"))
    shown = {line.stage for line in report.stages}
    for stage in report.stages:
        cancelled = " (job cancelled)" if stage.cancelled else ""
        lines.append(_row(stage.stage, f"lots {sum(stage.lots.values())}: {_counts(stage.lots)}{cancelled}"))
        if (hold := stage.queue_hold) and hold.held:
            lines.append(_row("", f"{held_back(hold.until, hold.refusals, hold.left_s)}; no batch of any "
                                  "job is created meanwhile"))
        elif hold:
            lines.append(_row("", refused_in_a_row(hold.refusals, hold.refused_at, hold.released)))
        lines += [_row("", line) for line in _retries(stage)]
        # Open shards, and finished ones an operator released (why their lots failed or came back).
        for shard in stage.shards:
            if shard.status in OPEN_SHARDS or shard.release is not None:
                lines += [_row("", line) for line in _shard(shard)]
        finished: dict[str, int] = {}
        for shard in stage.shards:
            if shard.status not in OPEN_SHARDS:
                finished[shard.status] = finished.get(shard.status, 0) + 1
        if finished:
            lines.append(_row("", f"finished shards: {_counts(finished)}"))
    lines += [_row(stage, "no work rows (no lot arrived yet, or pruned after the job finished)")
              for stage in ("vision", "translation") if stage not in shown]
    events = report.outbox
    if events.unpublished and events.oldest_age_s is not None:
        lines.append(_row("outbox", f"{sum(events.unpublished.values())} unpublished: "
                                    f"{_counts(events.unpublished)}; oldest accepted "
                                    f"{age(events.oldest_age_s)} ago"))
    else:
        lines.append(_row("outbox", "nothing unpublished"))
    return lines


def _retries(stage: StageLine) -> list[str]:
    """Lots by attempt, and why lots are being sent again or failed (their commonest last errors)."""
    counts = [f"{_nth(attempt)} {n}" for attempt, n in stage.attempts.items() if attempt]
    if not_sent := stage.attempts.get(0, 0):
        counts.append(f"not sent yet {not_sent}")
    lines = [f"lots by attempt: {', '.join(counts)}"]
    for error in stage.errors:
        text = error.error if len(error.error) <= ERROR_CHARS else error.error[:ERROR_CHARS - 1] + "…"
        lines.append(f"last error of {error.lots} lots ({_counts(error.states)}): {text}")
    if stage.other_errors:
        lines.append(f"last error of {stage.other_errors} more lots: less common ones")
    return lines


def _nth(attempt: int) -> str:
    suffix = "th" if attempt % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(attempt % 10, "th")
    return f"{attempt}{suffix}"


def _row(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def _shard(shard: ShardLine) -> list[str]:
    """The shard's line, then the pause it holds and the release decided on it, if any."""
    batch = shard.batch_id or "no batch yet"
    if shard.batch_id and shard.batch_status:
        batch += f" ({shard.batch_status})"
    lines = [f"shard {shard.shard_id} {shard.status}, attempt {shard.attempt}, {batch}, "
             f"{shard.lot_count} lots, age {age(shard.age_s)}, changed {age(shard.changed_s)} ago"]
    if shard.pause is not None:
        lines.append(f"  {_pause(shard.pause)}")
    if shard.release is not None:
        release = shard.release
        done = ("the stage carries it out at its next look" if shard.status == "submitted"
                else "carried out")
        lines.append(f"  {released(release.decision, release.by, release.at, release.reason)}; {done}")
    return lines


def _pause(pause: PauseLine) -> str:
    """Since when the shard holds its stage paused, and why (a quota pause: when it is tried again);
    a paused shard is rare, and its reason is what on-call acts on, so it is not clipped."""
    since = f"since {pause.since} ({age(pause.age_s)} ago)"
    if pause.retry_in_s is None:
        head = f"paused {since}, its batch cannot be read"
    else:
        head = (f"paused for the quota {since}, every instance of the stage; next try "
                + (f"in {age(pause.retry_in_s)}" if pause.retry_in_s > 0 else "due now"))
    return f"{head}: {pause.reason}"


def released(decision: str, by: str | None, at: str | None, reason: str | None) -> str:
    """An operator's release of a shard, as `jobs show` and `shards` print it."""
    return f"released ({decision}) by {by} at {at or '?'}: {reason}"


def held_back(until: str, refusals: int, left_s: float) -> str:
    """A stage's hold in force, as every view prints it. Batches are held for the time left whatever
    the count (`quota.queue_held`): a batch created since the last refusal and admitted ends the
    series, not the hold, and the queue it found room in is not to be called full."""
    if not refusals:
        return (f"queue held until {until}, {age(left_s)} more: the last hold runs out (a batch created "
                "since the last refusal was admitted, so OpenAI's enqueued-token queue had room again)")
    return (f"queue held until {until} ({refusals} refusals in a row), {age(left_s)} more: "
            "OpenAI's enqueued-token queue for the model is full")


def refused_in_a_row(refusals: int, last: str, released: bool) -> str:
    """A stage's series of batches refused by the queue between two holds, as every view prints it:
    what LotLensOpenAIQueueHeld fires on while no hold is in force."""
    latest = f"its hold released by an operator at {last}" if released else f"the last at {last}"
    return (f"{refusals} batches refused in a row by OpenAI's enqueued-token queue for the model, {latest}; "
            "not held back right now (the next batch the stage builds is the next try; a batch admitted "
            "ends the series)")


def age(seconds: float) -> str:
    """A duration as on-call reads it: `45s`, `12m`, `3h05m`, `2d04h`."""
    whole = max(int(seconds), 0)
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `jobs show`."""
    parser = groups.add_parser("jobs", help="where a job's lots are: stages, shards, read models, outbox")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    show = commands.add_parser("show", help="a job's lots per stage by state and by attempt, the commonest "
                               "last errors of its lots being sent again or failed, its shards (state, "
                               "attempt, OpenAI batch, age (its batch's at OpenAI once it has one), the "
                               "pause each holds its stage in and an operator's release of it), its "
                               "read-model status and unpublished events")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true", help="the same facts as JSON (ages in seconds)")
    show.set_defaults(handler=_show)
