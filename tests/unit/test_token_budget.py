"""Trimming a claimed batch to what is left of the enqueued-token budget, and sharing that room
between the clients with due jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lotlens_common.stage.core.rule import Flush, Shares, WaitingJob, plan_flushes

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def one_client(left: int, nothing_enqueued: bool = False) -> Shares:
    return Shares(left, clients=1, nothing_enqueued=nothing_enqueued)


def job(job_id: str, client: str, waiting: int, age_s: float = 60.0, tokens: int = 1000) -> WaitingJob:
    return WaitingJob(job_id, client, waiting, waiting, waiting, NOW - timedelta(seconds=age_s), tokens)


def plan(jobs: list[WaitingJob], enqueued: int = 0, limit: int = 10_000) -> list[Flush]:
    return plan_flushes(jobs, NOW, 30, 50_000, tokens_enqueued=enqueued, token_limit=limit)


# --- one client: the budget alone ---

def test_lots_are_taken_in_order_while_their_estimates_fit() -> None:
    assert one_client(1000).fits("c1", [400, 400, 100, 400]) == 3


def test_nothing_goes_when_the_first_lot_does_not_fit_and_batches_are_still_enqueued() -> None:
    assert one_client(500).fits("c1", [700, 100]) == 0


def test_a_lot_larger_than_the_whole_budget_goes_alone_once_nothing_is_enqueued() -> None:
    assert one_client(1000, nothing_enqueued=True).fits("c1", [1500, 100]) == 1


def test_only_the_rounds_first_lot_may_be_larger_than_the_budget() -> None:
    shares = Shares(1000, clients=2, nothing_enqueued=True)
    assert shares.fits("c1", [1500]) == 1
    shares.spend(1500)
    assert shares.fits("c2", [100]) == 0


# --- several clients: shares of what is left ---

def test_each_client_may_spend_an_equal_part_of_what_is_left() -> None:
    shares = Shares(9000, clients=3, nothing_enqueued=False)
    assert shares.fits("a", [1000] * 10) == 3
    shares.spend(3000)
    assert shares.fits("b", [1000] * 10) == 3
    shares.spend(3000)
    assert shares.fits("c", [1000] * 10) == 3


def test_what_a_client_leaves_of_its_share_goes_to_the_clients_after_it() -> None:
    shares = Shares(9000, clients=3, nothing_enqueued=False)
    assert shares.fits("small", [1000]) == 1
    shares.spend(1000)
    assert shares.fits("big", [1000] * 10) == 4  # 8000 left for two
    shares.spend(4000)
    assert shares.fits("bigger", [1000] * 10) == 4


def test_a_client_whose_share_is_smaller_than_a_lot_still_sends_one_lot_if_it_fits_what_is_left() -> None:
    # A share under one lot (many clients, a nearly full budget) sent nothing to anyone, round after round.
    shares = Shares(2500, clients=4, nothing_enqueued=False)
    for client in ("a", "b"):
        assert shares.fits(client, [1000, 1000]) == 1
        shares.spend(1000)
    assert shares.fits("c", [1000]) == 0  # 500 left: waits for room, as before


def test_a_clients_many_jobs_share_its_one_share() -> None:
    shares = Shares(4000, clients=2, nothing_enqueued=False)
    assert shares.fits("many", [1000]) == 1
    shares.spend(1000)
    assert shares.fits("many", [1000, 1000]) == 1  # its second job: what is left of the same share
    shares.spend(1000)
    assert shares.fits("many", [1000]) == 0
    assert shares.fits("one", [1000] * 3) == 2


# --- the plan ---

def test_without_a_budget_jobs_go_oldest_first_each_its_whole_batch() -> None:
    jobs = [job("b1", "b", 2, age_s=40), job("a1", "a", 500, age_s=90)]
    assert plan(jobs, limit=0) == [Flush("a1", 500), Flush("b1", 2)]


def test_within_a_budget_the_client_waiting_longest_goes_first_and_the_next_shares_what_is_left() -> None:
    jobs = [job("a1", "a", 500, age_s=90), job("b1", "b", 2, age_s=40)]
    assert plan(jobs) == [Flush("a1", 5), Flush("b1", 2)]


def test_the_client_served_longest_ago_goes_first_whatever_waits_longest() -> None:
    jobs = [job("a1", "a", 500, age_s=90), job("b1", "b", 500, age_s=40)]
    served = {"a": 100.0, "b": 50.0}
    assert plan_flushes(jobs, NOW, 30, 50_000, 0, 10_000, served) == [Flush("b1", 5), Flush("a1", 5)]
    assert plan_flushes(jobs, NOW, 30, 50_000, 0, 10_000, {"a": 100.0}) == [Flush("b1", 5), Flush("a1", 5)]


def test_a_client_with_many_jobs_does_not_crowd_out_another_with_one() -> None:
    jobs = [job(f"a{i}", "a", 1, age_s=100 - i) for i in range(20)] + [job("b1", "b", 20, age_s=10)]
    flushes = plan(jobs)
    assert sum(f.lots for f in flushes if f.job_id.startswith("a")) == 5
    assert [f for f in flushes if f.job_id == "b1"] == [Flush("b1", 5)]
    assert [f.job_id for f in flushes if f.job_id.startswith("a")] == [f"a{i}" for i in range(5)]  # oldest


def test_the_first_turn_that_fits_nothing_keeps_the_room_for_it() -> None:
    jobs = [job("a1", "a", 3, age_s=90, tokens=4000), job("b1", "b", 10, age_s=40, tokens=500)]
    # 3000 left: a1, first in turn, fits not one 4000-token lot, and b1's would eat the room that
    # batches finishing free for it: nothing goes until a1's lot fits.
    assert plan(jobs, enqueued=7000) == []


def test_a_later_turn_that_fits_nothing_does_not_stop_the_plan_for_the_clients_after_it() -> None:
    jobs = [job("a1", "a", 10, age_s=90, tokens=500), job("b1", "b", 3, age_s=60, tokens=4000),
            job("c1", "c", 10, age_s=40, tokens=500)]
    # 3000 left for three: a1 its 1000, b1 fits not one 4000-token lot, c1 takes what is left.
    assert plan(jobs, enqueued=7000) == [Flush("a1", 2), Flush("c1", 4)]


def test_nothing_is_planned_when_the_budget_is_full() -> None:
    assert plan([job("a1", "a", 5), job("b1", "b", 5)], enqueued=10_000) == []


def test_an_empty_budget_cuts_the_first_batch_to_what_fits_and_shares_it() -> None:
    assert plan([job("a1", "a", 50), job("b1", "b", 50)]) == [Flush("a1", 5), Flush("b1", 5)]
