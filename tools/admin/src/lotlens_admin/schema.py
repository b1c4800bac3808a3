"""`lotlens-admin db`: the schema's revision, and stepping it back for a rollback.

The migrate Job only ever upgrades, and the older release's pods run on the schema it leaves.
Taking the schema back with a release means undoing revisions, newest first: `db downgrade -1`
undoes one revision (`-N`, N of them; a revision id, every one above it), each in a transaction
of its own, under the migrations' lock and lock waits the migrate Job uses. Only the release that
added a revision knows how to undo it, and its pods use what the undo drops, so the order is
(README, "Stepping the schema back"): no pod of the newer release left (`kubectl rollout undo`
each Deployment, or scale it to 0); its migrate Job kept from running again (`kubectl delete job
lotlens-migrate`, nothing of it applied), as it would upgrade straight back; `db downgrade` with
the newer release's admin image, to the older release's newest revision; then `kubectl apply -k`
the older release.

A revision whose rows the older schema cannot hold and nothing could bring back (unpublished
outbox events, clients' webhook secrets) refuses, and says what to do first
(`lotlens_common.migrations.refusals`; README, "Stepping the schema back"). Every revision the
downgrade would undo is asked before the first is (`--dry-run` too), so that one refusing far
below does not stop it halfway, the revisions above it undone; each asks again as it is undone,
its tables locked, and one written to meanwhile stops the downgrade there.
"""

from __future__ import annotations

import argparse
import re
import sys

from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from lotlens_admin.consent import add_flags, withheld
from lotlens_admin.sessions import admin_engine
from lotlens_common.db import MIGRATIONS, migrate
from lotlens_common.migrate import database_revisions, known_revisions, release_revisions
from lotlens_common.migrations.refusals import DowngradeRefused, Refusal

BASE = "base"
_STEPS = re.compile(r"-(\d+)")


class NoSuchStep(Exception):
    """The target names no revision below the schema's (the message says which and why)."""


def steps_down(current: str, target: str) -> list[str]:
    """The revisions a downgrade from `current` to `target` (`-N`, a revision id, `base`) undoes,
    newest first."""
    scripts = ScriptDirectory(str(MIGRATIONS))
    steps = _STEPS.fullmatch(target)
    undone: list[str] = []
    revision: str | None = current
    while revision is not None and revision != target:
        if steps is not None and len(undone) == int(steps.group(1)):
            return undone
        undone.append(revision)
        below = scripts.get_revision(revision).down_revision
        if not (below is None or isinstance(below, str)):
            raise NoSuchStep(f"{revision} merges several revisions: undo them by id")
        revision = below
    if steps is not None and len(undone) < int(steps.group(1)):
        raise NoSuchStep(f"the schema is {len(undone)} revision(s) above the base, not {steps.group(1)}")
    if steps is None and revision is None and target != BASE:
        raise NoSuchStep(f"{target} is no revision below the schema's ({current})")
    return undone


def refusals(engine: Engine, undone: list[str]) -> list[str]:
    """Why each revision of `undone` that would refuse on the rows there are now does, newest first."""
    scripts = ScriptDirectory(str(MIGRATIONS))
    checks = [getattr(scripts.get_revision(revision).module, "REFUSAL", None) for revision in undone]
    with engine.connect() as conn:
        found = [check.found(conn) for check in checks if isinstance(check, Refusal)]
    return [reason for reason in found if reason is not None]


def _current(_args: argparse.Namespace) -> int:
    engine = admin_engine(pool_size=1)
    try:
        current = database_revisions(engine)
    finally:
        engine.dispose()
    heads, known = release_revisions(), known_revisions()
    newest = ", ".join(sorted(heads))
    # Newer: the revision a rollback to this release steps the schema down to (README).
    where = ("this release's newest" if current == heads else
             f"newer than this release's {newest} (downgrade it to {newest} with the newer release's "
             "admin image)" if current - known else
             f"behind this release's {newest} (the migrate Job upgrades it)")
    print(f"{', '.join(sorted(current)) or BASE}: {where}")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    engine = admin_engine(pool_size=2)
    try:
        current = database_revisions(engine)
        if len(current) != 1:
            several = ", ".join(sorted(current))
            return _refuse(f"the schema is at several revisions ({several}): undo them by id" if current
                           else "the schema is at the base: there is nothing to undo")
        (revision,) = current
        if revision not in known_revisions():
            return _refuse(f"the schema is at {revision}, which this release does not know: downgrade it "
                           "with the admin image of the release that added it")
        try:
            undone = steps_down(revision, args.target)
        except NoSuchStep as exc:
            return _refuse(f"{exc}; nothing was changed")
        if not undone:
            return _refuse(f"the schema is at {revision} already; nothing was changed")
        if refused := refusals(engine, undone):
            for reason in refused:  # all of them: the operator deals with each before trying again
                _refuse(f"{reason}; nothing was changed: the schema is at {revision}")
            return 1
        below = ScriptDirectory(str(MIGRATIONS)).get_revision(undone[-1]).down_revision
        destination = below if isinstance(below, str) else BASE
        plan = f"undo {', '.join(undone)}, stepping the schema down to {destination}"
        if (code := withheld(args, plan)) is not None:
            return code
        try:
            migrate(engine, destination, downgrade=True)
        except DowngradeRefused as refused:
            at = ", ".join(sorted(database_revisions(engine))) or BASE
            return _refuse(f"{refused} (written while the downgrade ran); the schema is at {at}")
    finally:
        engine.dispose()
    print(f"undid {', '.join(undone)}: the schema is at {destination}")
    return 0


def _refuse(message: str) -> int:
    print(f"lotlens-admin: {message}", file=sys.stderr)
    return 1


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `db current|downgrade`."""
    parser = groups.add_parser("db", help="the schema's revision, and stepping it back for a rollback")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    current = commands.add_parser("current", help="the schema's revision, and whether this release's "
                                  "is newer, the same or older")
    current.set_defaults(handler=_current)
    undoing = ("undo migrations, newest first, each in a transaction of its own: -1 one (-N, N of them), "
               "a revision id every one above it, base all of them. Run it with the image of the release "
               "being rolled back, once no pod of that release runs (README, \"Stepping the schema back\"). "
               "Every revision it would undo is asked first: one whose rows the older schema cannot hold "
               "refuses, nothing changed, and says what to do first; asks first (--yes without a terminal)")
    downgrade = commands.add_parser("downgrade", help=undoing, description=undoing)
    downgrade.add_argument("target", help="-1 (one revision), -N, a revision id, or base")
    add_flags(downgrade)
    downgrade.set_defaults(handler=_downgrade)
