"""Reading a proxy's traffic (the kernel's counts for open connections, toxiproxy's for ended ones)
and placing a network fault where traffic flows: waiting, bounded, for its link to be busy."""

from __future__ import annotations

from collections.abc import Iterator

from chaos.traffic import Flow, connections, moved, wait_for_traffic

SS = """\
0      0      127.0.0.1:24888 127.0.0.1:47432 bbr rto:208 bytes_sent:90 bytes_acked:90 bytes_received:735
0      0      127.0.0.1:24888 127.0.0.1:47446 bbr wscale:10,10 rto:208 segs_out:1 segs_in:1
"""


def test_each_open_connection_is_read_with_the_counts_ss_leaves_out_as_zero() -> None:
    assert connections(SS) == {"127.0.0.1:47432": (735, 825), "127.0.0.1:47446": (0, 0)}
    assert connections("") == {}


def test_bytes_on_a_connection_open_at_both_readings_are_traffic() -> None:
    assert moved(Flow({"a": (10, 20)}, 0), Flow({"a": (10, 21)}, 0))  # an answer reached the client
    assert moved(Flow({"a": (10, 20)}, 0), Flow({"a": (14, 24)}, 0))
    assert not moved(Flow({"a": (10, 20)}, 0), Flow({"a": (10, 20)}, 0))


def test_a_new_connection_is_traffic_once_it_carried_a_byte() -> None:
    assert moved(Flow({}, 0), Flow({"b": (5, 5)}, 0))
    assert not moved(Flow({}, 0), Flow({"b": (0, 0)}, 0))


def test_a_connection_that_ended_is_traffic_only_for_bytes_beyond_what_it_had_carried() -> None:
    # Toxiproxy counts a connection's whole life when it ends: 10 bytes were there before.
    assert not moved(Flow({"a": (10, 20)}, 100), Flow({}, 110))
    assert moved(Flow({"a": (10, 20)}, 100), Flow({}, 114))
    # One that came and went between the readings: toxiproxy's count alone tells.
    assert moved(Flow({}, 100), Flow({}, 103))


class FakeLink:
    """A link whose open connection carries a byte more at each reading from the `busy_from`-th on;
    its clock moves only when slept on."""

    def __init__(self, busy_from: int | None) -> None:
        self.readings = 0
        self.busy_from = busy_from
        self.now = 0.0

    def flow(self) -> Flow:
        self.readings += 1
        busy = self.busy_from is not None and self.readings >= self.busy_from
        carried = self.readings - self.busy_from + 1 if busy and self.busy_from is not None else 0
        return Flow({"client": (carried, carried)}, 0)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _waited(link: FakeLink, bound_s: float) -> float | None:
    return wait_for_traffic(link.flow, bound_s, look_s=0.5, clock=link.clock, sleep=link.sleep)


def test_a_busy_link_gets_its_fault_after_one_look() -> None:
    assert _waited(FakeLink(busy_from=1), bound_s=30) == 0.5


def test_a_fault_waits_for_its_link_to_turn_busy() -> None:
    link = FakeLink(busy_from=7)  # quiet for six readings (three seconds), then busy
    assert _waited(link, bound_s=30) == 3.0


def test_a_quiet_link_is_waited_for_no_longer_than_the_bound() -> None:
    link = FakeLink(busy_from=None)
    assert _waited(link, bound_s=3) is None
    assert link.now == 3.0


def test_looks_follow_one_another_without_a_gap() -> None:
    # Bytes that crossed between two looks are still seen: each look starts at the last reading.
    readings: Iterator[Flow] = iter([Flow({}, 0), Flow({"c": (0, 0)}, 0), Flow({"c": (3, 3)}, 0)])
    link = FakeLink(busy_from=None)
    assert wait_for_traffic(lambda: next(readings), 30, 0.5, link.clock, link.sleep) == 1.0
