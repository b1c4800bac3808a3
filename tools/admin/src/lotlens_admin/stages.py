"""`lotlens-admin stages`: a batch stage's hold after OpenAI's enqueued-token queue refused a batch.

After a batch failed `token_limit_exceeded`, every instance of the stage holds new batches back
(`lotlens_common.stage.core.queue_hold`), a minute, doubling, up to 15 minutes, on the stage's row
of `stage_queue_holds`. `shards paused` and `stages holds` show each hold in force, and each series
of refusals between two holds, which LotLensOpenAIQueueHeld fires on too (`hold_line`);
`release-hold` ends a hold, when on-call knows the queue has room again (the other workload's
batches cancelled, the tier raised), where ending it meant writing the row by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from lotlens_admin.job_report import moment
from lotlens_admin.jobs import held_back, refused_in_a_row
from lotlens_admin.sessions import admin_engine
from lotlens_common.stage.adapters.postgres_queue_hold import RefusalSeries, end, refusal_series

LABEL = 12  # the width of the left column, as `jobs show` and `shards paused` have it


def hold_line(hold: RefusalSeries) -> str:
    """A stage's hold in force, or its series of refusals between two holds, a left column naming
    the stage."""
    if not hold.held:
        series = refused_in_a_row(hold.refusals, moment(hold.refused_at), hold.released)
        return f"{hold.stage:<{LABEL}}{series}"
    return (f"{hold.stage:<{LABEL}}{held_back(moment(hold.held_until), hold.refusals, hold.left_s)}; "
            f"every instance of the stage (`lotlens-admin stages release-hold {hold.stage}` ends it)")


def _holds(args: argparse.Namespace) -> int:
    engine = admin_engine()
    try:
        with engine.connect() as conn:
            holds = refusal_series(conn)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([dataclasses.asdict(hold) for hold in holds], indent=2, default=str))
    elif not holds:
        print("no stage is held back by OpenAI's enqueued-token queue, and none has batches refused in a row")
    for hold in [] if args.json else holds:
        print(hold_line(hold))
    return 0


def _release_hold(args: argparse.Namespace) -> int:
    engine = admin_engine()
    try:
        with engine.begin() as conn:
            ended = end(conn, args.stage)
    finally:
        engine.dispose()
    # Run twice, or after the hold ran out: nothing to do, and no error for a script to handle.
    if ended is None:
        print(f"no queue hold of the {args.stage} stage is in force, and no batches refused in a row; "
              "nothing was changed")
        return 0
    if not ended.held:
        print(f"no queue hold of the {ended.stage} stage is in force, so nothing to release; nothing was "
              f"changed: {refused_in_a_row(ended.refusals, moment(ended.refused_at), ended.released)}")
        return 0
    print(f"ended the queue hold of the {ended.stage} stage (until {moment(ended.held_until)}, "
          f"{ended.refusals} refusals in a row): every instance builds again at its next round; a "
          "batch refused again holds it twice as long as the last hold, one admitted ends the series")
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `stages holds` and `stages release-hold`."""
    parser = groups.add_parser("stages", help="a batch stage's hold after OpenAI's enqueued-token queue "
                               "refused a batch (`shards paused` lists the holds in force)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = ("each stage held back as OpenAI's enqueued-token queue refused its batches: until when, "
               "after how many refusals in a row; and each stage whose refusals in a row go on between "
               "two holds (the next batch built is the next try), the last when")
    holds = commands.add_parser("holds", help=listing, description=listing)
    holds.add_argument("--json", action="store_true", help="the same facts as a JSON list")
    holds.set_defaults(handler=_holds)
    releasing = ("end the stage's hold after OpenAI's enqueued-token queue for its model refused a "
                 "batch (token_limit_exceeded), for every instance, at once instead of at its time: "
                 "when the queue has room again. The refusals in a row are kept; run twice, the "
                 "second changes nothing")
    released = commands.add_parser("release-hold", help=releasing, description=releasing)
    released.add_argument("stage", help="the stage's name, as `shards paused` shows it (vision, translation)")
    released.set_defaults(handler=_release_hold)
