"""The relay's floor (`outbox_floor`): a proposal is taken up only once every transaction that could
hold an id below it has ended, and never past a row still unpublished."""

from __future__ import annotations

from typing import cast

import pytest
from sqlalchemy import Connection

from lotlens_gateway import outbox_floor
from lotlens_gateway.outbox_floor import Floor


def _after_read(floor: Floor, oldest: int, top: int, last: int | None) -> Floor:
    floor._seen = (oldest, top, last)
    return floor


def test_a_proposal_waits_for_the_transactions_running_when_it_was_made() -> None:
    floor = Floor()
    _after_read(floor, oldest=100, top=50, last=None).moved(False, (), now=0.0, bound=105)
    assert (floor.below, floor.proposed) == (0, (51, 105))
    # Transaction 104 (say, an append holding ids below 50) still runs: the floor stays.
    _after_read(floor, oldest=104, top=60, last=None).moved(False, (), now=0.0, bound=None)
    assert (floor.below, floor.proposed) == (0, (51, 105))
    # It ended; the read from the old floor found its row 20 unpublished: the floor stops there.
    _after_read(floor, oldest=105, top=60, last=20).moved(False, {20}, now=0.0, bound=112)
    assert (floor.below, floor.proposed) == (20, (20, 112))


def test_a_full_read_proposes_the_row_after_its_last_and_unpublished_rows_keep_it_lower() -> None:
    floor = Floor()
    _after_read(floor, oldest=1, top=9000, last=5000).moved(True, (), now=0.0, bound=2)
    assert floor.proposed == (5001, 2)
    floor = Floor()
    # Rows the producer holds, or dropped, or a read row not marked: the proposal stays below them.
    _after_read(floor, oldest=1, top=9000, last=5000).moved(True, {4000, 4500}, now=0.0, bound=2)
    assert floor.proposed == (4000, 2)
    _after_read(floor, oldest=3, top=9000, last=9000).moved(False, (), now=0.0, bound=4)
    assert (floor.below, floor.proposed) == (4000, (9001, 4))


def test_the_floor_never_moves_back() -> None:
    floor = Floor(below=300, proposed=(200, 5))
    _after_read(floor, oldest=6, top=400, last=None).moved(False, (), now=0.0, bound=7)
    assert floor.below == 300


def test_the_floor_is_behind_by_the_ids_up_to_the_highest_its_last_read_saw() -> None:
    floor = Floor(below=1000)
    assert floor.behind() == 0  # nothing read yet
    _after_read(floor, oldest=1, top=1499, last=None)
    assert floor.behind() == 500
    floor.below = 1500
    assert floor.behind() == 0


def test_a_floor_at_0_is_behind_only_by_the_ids_still_kept() -> None:
    # A restarted process (or one after a failed round) starts at 0: counted from there, 40
    # million ids handed out over the outbox's life, pruned long ago, read as a held-back floor.
    floor = Floor()
    _after_read(floor, oldest=1, top=40_000_000, last=None)
    assert floor.behind(kept_from=39_998_001) == 2000
    assert floor.behind() == 40_000_001


def test_a_proposal_is_held_for_as_long_as_a_transaction_older_than_it_runs() -> None:
    floor = Floor()
    assert floor.held_s(oldest=1, now=5.0) == 0.0  # nothing proposed yet
    _after_read(floor, oldest=100, top=50, last=None).moved(False, (), now=10.0, bound=105)
    # Transaction 104 had its id before the proposal's bound (105, handed out after its read) and
    # still runs.
    assert floor.held_s(oldest=104, now=70.0) == 60.0
    # A round that cannot take the proposal up keeps its time.
    _after_read(floor, oldest=104, top=60, last=None).moved(False, (), now=75.0, bound=None)
    assert floor.held_s(oldest=104, now=80.0) == 70.0
    # 104 ended: nothing holds the floor, before a round has taken the proposal up too.
    assert floor.held_s(oldest=105, now=81.0) == 0.0
    _after_read(floor, oldest=105, top=60, last=None).moved(False, (), now=82.0, bound=112)
    assert (floor.below, floor.proposed, floor.proposed_at) == (51, (61, 112), 82.0)
    assert floor.held_s(oldest=112, now=90.0) == 0.0


class _Round:
    """The round's connection: `pg_current_xact_id()` answers `xid`."""

    def __init__(self, xid: int) -> None:
        self.xid, self.asked = xid, 0

    def execute(self, _statement: object) -> _Round:
        self.asked += 1
        return self

    def scalar_one(self) -> str:
        return str(self.xid)


def test_a_round_takes_a_transaction_id_for_a_bound_only_when_it_proposes_past_the_floor() -> None:
    floor, conn = Floor(below=51), _Round(200)
    _after_read(floor, oldest=100, top=50, last=None)  # idle, the floor at the top: no id taken
    assert (floor.bound(cast(Connection, conn)), conn.asked) == (None, 0)
    _after_read(floor, oldest=100, top=60, last=None)  # rows past the floor
    assert floor.bound(cast(Connection, conn)) == 200
    floor.moved(False, (), now=0.0, bound=200)
    _after_read(floor, oldest=150, top=70, last=None)  # 150 had its id before the bound, and runs
    assert (floor.bound(cast(Connection, conn)), conn.asked) == (None, 1)
    _after_read(floor, oldest=200, top=70, last=None)  # taken up this round: a new proposal
    conn.xid = 230
    assert floor.bound(cast(Connection, conn)) == 230
    floor.moved(False, (), now=1.0, bound=230)
    assert (floor.below, floor.proposed) == (61, (71, 230))


def test_a_round_without_a_bound_proposes_nothing() -> None:
    floor = Floor(below=10, proposed=(20, 5))
    _after_read(floor, oldest=6, top=30, last=None).moved(False, (), now=0.0, bound=None)
    assert (floor.below, floor.proposed) == (20, None)


class _Database:
    """The round's connection: the read's horizon row (oldest running transaction, the server's
    start, the top id) and no rows; the audit's slice answer; the parameters each was asked with."""

    def __init__(self, oldest: int = 650, started: str = "t0", top: int = 9599,
                 slice_found: tuple[int, int] = (0, 0)) -> None:
        self.horizon = (None, str(oldest), started, str(top))
        self.slice_found = slice_found
        self.asked: list[dict[str, object]] = []

    def execute(self, _statement: object, parameters: dict[str, object]) -> _Database:
        self.asked.append(parameters)
        return self

    def all(self) -> list[tuple[object, ...]]:
        return [self.horizon]

    def one(self) -> tuple[int, int, int | None]:
        after, below = int(cast(int, self.asked[-1]["after"])), int(cast(int, self.asked[-1]["below"]))
        lo = max(after, 100)  # the lowest id kept: 100
        found, first = self.slice_found
        return min(lo + int(cast(int, self.asked[-1]["ids"])), below), found, first if found else None


def _read(floor: Floor, database: _Database) -> None:
    floor.read(cast(Connection, database), "t", [], 10)


def test_a_floor_starts_over_when_the_database_server_changed(caplog: pytest.LogCaptureFixture) -> None:
    # A promoted replica that had not received the last commits hands their transaction ids and
    # outbox ids out again, below a floor that had passed them; the relay's round often meets no
    # error (its pool reconnected already), so its floors were kept.
    floor = Floor(below=9500, proposed=(9600, 700))
    _read(floor, _Database(oldest=650))
    _read(floor, _Database(oldest=660))
    assert (floor.below, floor.proposed) == (9500, (9600, 700))  # the same server, moving on
    _read(floor, _Database(oldest=610))  # its horizon went back
    assert (floor.below, floor.proposed) == (0, None)
    assert "oldest transaction 610, was 660" in caplog.text
    # The new primary had handed out more transaction ids than were lost before the relay read:
    # its horizon is ahead, its start time tells.
    floor = Floor(below=9500, proposed=(9600, 1010))
    _read(floor, _Database(oldest=1000, started="t0"))
    _read(floor, _Database(oldest=1010, started="t1"))
    assert (floor.below, floor.proposed) == (0, None)


def test_the_audit_checks_a_slice_below_the_floor_a_minute_and_lowers_the_floor_to_what_it_finds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_floor, "AUDIT_IDS", 1000)
    floor, database = Floor(below=2500, proposed=(2600, 7)), _Database()
    assert floor.audit(cast(Connection, database), "t", [], now=0.0) == 0
    assert (database.asked[-1]["after"], floor._audit_after) == (0, 1100)  # from the lowest id kept
    assert floor.audit(cast(Connection, database), "t", [], now=30.0) == 0 and len(database.asked) == 1
    floor.audit(cast(Connection, database), "t", [], now=60.0)
    assert (database.asked[-1]["after"], floor._audit_after) == (1100, 2100)
    floor.audit(cast(Connection, database), "t", [], now=120.0)  # the last slice ends at the floor
    assert floor._audit_after == 0 and floor.below == 2500
    database.slice_found = (3, 150)
    assert floor.audit(cast(Connection, database), "t", [], now=180.0) == 3
    assert (floor.below, floor.proposed) == (150, None)  # the next round's read has them


def test_a_floor_at_0_is_not_audited() -> None:
    floor, database = Floor(), _Database()
    assert floor.audit(cast(Connection, database), "t", [], now=0.0) == 0 and database.asked == []
