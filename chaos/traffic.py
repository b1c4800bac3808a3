"""Whether bytes crossed a toxiproxy proxy between two moments, and waiting until they do.

toxiproxy (v2.5.0 and since, `link.go`) adds a connection's bytes to its
`toxiproxy_proxy_received_bytes_total` only when that connection ends (`io.Copy` returns): a
connection a service keeps open (its Kafka client's, its PostgreSQL pool's) moves no counter, however
much it carries, and one that ends adds every byte of its life at once. So the open connections are
read from the kernel, which counts as bytes arrive (TCP_INFO of the proxy's side of each, listed by
`ss`), and toxiproxy's counter is left to tell only about connections that ended."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

# The peer address of a socket line of `ss -tinHO state established`: "recv-q send-q local peer ...".
_PEER = re.compile(r"^\s*\d+\s+\d+\s+\S+\s+(\S+)")
_COUNT = re.compile(r"\bbytes_(received|acked):(\d+)")


@dataclass(frozen=True)
class Flow:
    """A proxy's traffic so far: per open client connection (by the client's address), the bytes
    the client sent and the bytes both ways; and the client bytes of connections that ended."""

    open: dict[str, tuple[int, int]]
    ended: float


def connections(ss_lines: str) -> dict[str, tuple[int, int]]:
    """Per connection listed by `ss -tinHO`: (bytes received from the client, bytes received plus
    bytes the client acknowledged). `ss` leaves a count out while it is zero."""
    found: dict[str, tuple[int, int]] = {}
    for line in ss_lines.splitlines():
        peer = _PEER.match(line)
        if peer:
            counts = {name: int(value) for name, value in _COUNT.findall(line)}
            received = counts.get("received", 0)
            found[peer.group(1)] = (received, received + counts.get("acked", 0))
    return found


def moved(before: Flow, after: Flow) -> bool:
    """Whether bytes crossed the proxy between two readings, on any connection: one open at the
    second that carried more than at the first (or anything, when new), or one that ended."""
    if any(both > before.open.get(peer, (0, 0))[1] for peer, (_, both) in after.open.items()):
        return True
    # Toxiproxy counted each ended connection's whole life; what the gone ones had carried at the
    # first reading crossed before it. A connection that came and went in between is beyond that.
    gone = sum(sent for peer, (sent, _) in before.open.items() if peer not in after.open)
    return after.ended - before.ended > gone


def wait_for_traffic(
    flow: Callable[[], Flow],
    bound_s: float,
    look_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """Seconds until bytes were seen crossing the proxy in a `look_s` window, looking for at most
    `bound_s`; None when the link stayed quiet all along."""
    started = clock()
    last = flow()
    while clock() - started < bound_s:
        sleep(look_s)
        now = flow()
        if moved(last, now):
            return clock() - started
        last = now
    return None
