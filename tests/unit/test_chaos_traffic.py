"""Reading a proxy's traffic: the kernel's counts for open connections, toxiproxy's for ended ones."""

from __future__ import annotations

from chaos.traffic import Flow, connections, moved

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

