"""`lotlens-admin shards`: the shards that hold a batch stage paused, and releasing one.

A stage that cannot read a batch it created (401/403/404: a key of another OpenAI project, a
deleted project) submits nothing until a listing of its batches tells what became of it; a key
that sees none of our batches never does, and the stage stayed paused for good. `paused` lists
those shards as the stage recorded them, and the shards refused for the quota (`stage/quota.py`:
no release for those, the stage tries again on its own); `release` records the operator's
decision on one (`--resend` or `--fail`, who, when, why) on the shard's row, and the running
stage carries it out at its next look at the shard (`lotlens_common.stage.release`), pause
lifted, no restart.

The decision is one conditional statement, taken while holding the shard's own lock (the one a
stage holds to collect, cancel or release it): a stage acting on the shard at that moment makes
the command refuse, and one that reads the batch again first makes it change nothing; a read
that succeeds after it drops the release (the batch runs: its lots are not sent again).
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import sys
from datetime import datetime

from sqlalchemy import func, select

from lotlens_admin.job_report import moment
from lotlens_admin.jobs import age, released
from lotlens_admin.sessions import admin_engine
from lotlens_admin.stages import hold_line
from lotlens_common.stage.adapters import postgres_locks, postgres_queue_hold
from lotlens_common.stage.adapters.postgres_release import ShardRecord, paused_shards, release, shard_record
from lotlens_common.stage.core.lifecycle import FAIL, RESEND
from lotlens_common.stage.release import lot_reason

LABEL = 12  # the width of the left column, as `jobs show` has it


def _paused(args: argparse.Namespace) -> int:
    engine = admin_engine()
    try:
        with engine.connect() as conn:
            shards = paused_shards(conn)
            # A stage held back after OpenAI's queue refused a batch submits nothing either; between two
            # holds its tries are refused again (LotLensOpenAIQueueHeld fires on the series).
            holds = postgres_queue_hold.refusal_series(conn)
            now = conn.execute(select(func.now())).scalar_one()  # the clock that stamped the rows
    finally:
        engine.dispose()
    if args.json:
        # A list, as before the holds were shown: scripts read it (the holds: `stages holds --json`).
        print(json.dumps([dataclasses.asdict(shard) for shard in shards], indent=2, default=str))
        return 0
    if not shards and not holds:
        print("no shard holds a stage paused, and no stage is held back by OpenAI's queue or has batches "
              "refused by it in a row (a pause for a refused key is in the stage's log: `OpenAI refused "
              "the key`)")
    for shard in shards:
        print("\n".join(_lines(shard, now)))
    for hold in holds:
        print(hold_line(hold))
    return 0


def _lines(shard: ShardRecord, now: datetime) -> list[str]:
    """One paused shard, a left column naming the stage."""
    lines = [f"{shard.stage:<{LABEL}}shard {shard.shard_id}, job {shard.job_id}, {shard.lot_count} lots, "
             f"batch {shard.batch_id}"]
    if shard.unreadable_since is not None:
        since = age((now - shard.unreadable_since).total_seconds())
        lines.append(f"{'':<{LABEL}}unreadable since {moment(shard.unreadable_since)} ({since} ago): "
                     f"{shard.unreadable_reason}")
    if shard.quota_paused_since is not None:
        since = age((now - shard.quota_paused_since).total_seconds())
        retry_in = (shard.quota_retry_at - now).total_seconds() if shard.quota_retry_at else 0.0
        next_try = f"in {age(retry_in)}" if retry_in > 0 else "due now"
        lines.append(f"{'':<{LABEL}}refused for the quota since {moment(shard.quota_paused_since)} ({since} "
                     f"ago), every instance of the stage; next try {next_try}: {shard.quota_reason}")
    if shard.release is not None:
        lines.append(f"{'':<{LABEL}}{_decision(shard)}; the stage carries it out at its next look")
    return lines


def _decision(shard: ShardRecord) -> str:
    return released(str(shard.release), shard.released_by,
                    moment(shard.released_at) if shard.released_at else None, shard.release_reason)


def _login() -> str:
    """This process's login: a container's user may have no name (no passwd entry), and asking
    for it then raises."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _release(args: argparse.Namespace) -> int:
    decision = RESEND if args.resend else FAIL
    by = args.by or _login()
    engine = admin_engine()
    try:
        with postgres_locks.exclusive(engine, args.shard_id) as mine:
            if not mine:
                return _refuse(f"a stage holds shard {args.shard_id!r} right now (collecting, cancelling "
                               "or releasing it); nothing was changed: run the command again")
            with engine.begin() as conn:
                recorded = release(conn, args.shard_id, decision, by, args.reason)
                shard = shard_record(conn, args.shard_id)
                still_paused = [other for other in paused_shards(conn) if shard is not None
                                and other.stage == shard.stage and other.release is None]
    finally:
        engine.dispose()
    if shard is None:
        return _refuse(f"shard {args.shard_id!r} is unknown: no stage has it on record "
                       "(`lotlens-admin shards paused` lists the paused ones)")
    if not recorded:
        return _not_recorded(shard, decision)
    print(_consequence(shard, decision))
    if still_paused:
        print(f"{len(still_paused)} other shards still hold the {shard.stage} stage paused "
              "(`lotlens-admin shards paused`)")
    return 0


def _consequence(shard: ShardRecord, decision: str) -> str:
    done = (f"released shard {shard.shard_id} (job {shard.job_id}, {shard.lot_count} lots) by "
            f"{shard.released_by}")
    if decision == RESEND:
        return (f"{done}: the {shard.stage} stage sends its lots again at its next look, under the key it "
                f"has now (a lot at its last attempt fails instead, as for any lost batch). If batch "
                f"{shard.batch_id} still runs in the old OpenAI project, OpenAI may charge for those "
                "lots twice: cancel it there if you can")
    return (f"{done}: the {shard.stage} stage fails its lots at its next look, with the reason "
            f"{lot_reason(decision, shard.batch_id)!r}")


def _not_recorded(shard: ShardRecord, decision: str) -> int:
    """Why the decision was not recorded; 0 when the same one already was (a command run twice)."""
    if shard.release == decision:
        done = ("the stage carries it out at its next look" if shard.status == "submitted"
                else "carried out")
        print(f"shard {shard.shard_id} was already {_decision(shard)} ({done}); nothing was changed")
        return 0
    if shard.quota_retry_at is not None:
        return _refuse(f"shard {shard.shard_id} holds the {shard.stage} stage paused for the quota, not for "
                       "a batch no key can read: nothing was changed. It is tried again on its own "
                       "(`shards paused` says when); restore the OpenAI project's billing or quota")
    if shard.release is not None:
        return _refuse(f"shard {shard.shard_id} was already {_decision(shard)}; a decision is not "
                       "changed: nothing was changed")
    if shard.status != "submitted":
        return _refuse(f"shard {shard.shard_id} is {shard.status} (batch {shard.batch_id}: "
                       f"{shard.batch_status}): it holds no stage paused; nothing was changed")
    return _refuse(f"the {shard.stage} stage reads batch {shard.batch_id} of shard {shard.shard_id} "
                   "(or has not found it unreadable): it holds no stage paused, and its lots are "
                   "followed as usual; nothing was changed")


def _refuse(message: str) -> int:
    print(f"lotlens-admin: {message}", file=sys.stderr)
    return 1


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `shards paused|release`."""
    parser = groups.add_parser("shards", help="the shards that hold a stage paused (a batch it cannot "
                               "read, a create refused for the quota), and releasing one by an "
                               "operator's decision")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = ("each shard holding a stage paused because its batch cannot be read (401/403/404 and "
               "a listing that shows none of our batches): stage, shard, job, lots, batch, since when "
               "and why, and a release recorded but not carried out yet; each shard whose batch "
               "OpenAI refused to create for the quota: since when, why, and when it is tried again; "
               "and each stage held back as OpenAI's enqueued-token queue refused its batches: until "
               "when, after how many refusals in a row (`stages release-hold` ends it), or the "
               "refusals in a row between two holds")
    paused = commands.add_parser("paused", help=listing, description=listing)
    paused.add_argument("--json", action="store_true", help="the shards as a JSON list (the queue "
                        "holds: `stages holds --json`)")
    paused.set_defaults(handler=_paused)
    releasing = ("release a shard that holds its stage paused, when the batch's OpenAI project or key "
                 "is gone for good: the running stage sends its lots again (--resend) or fails them "
                 "(--fail) at its next look, and submits again once no other shard holds it paused. "
                 "Refused for a shard not paused this way, or while a stage is acting on it; run twice, "
                 "the same decision changes nothing, another one is refused")
    released = commands.add_parser("release", help=releasing, description=releasing)
    released.add_argument("shard_id")
    decision = released.add_mutually_exclusive_group(required=True)
    decision.add_argument("--resend", action="store_true",
                          help="send the lots again under the stage's current key (a lot at its last "
                          "attempt fails); OpenAI may charge twice if the old batch still runs")
    decision.add_argument("--fail", action="store_true",
                          help="fail the lots, with a reason their clients read; nothing is sent again")
    released.add_argument("--reason", required=True,
                          help="why (kept on the shard's row, with who and when; not shown to clients)")
    released.add_argument("--by", help="who decides (default: this process's login; in the cluster's "
                          "admin pod that is the pod's user, not yours)")
    released.set_defaults(handler=_release)
