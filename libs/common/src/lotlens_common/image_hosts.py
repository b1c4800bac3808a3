"""Image hosts that give no answer, taken as down for a while, one client's at a time.

A host that accepts connections and never answers (or whose DNS never answers) cost each of its
URLs a full check: every try to its timeout, and two more tries after it. One job of 50,000 lots
with 20 such URLs each held a vision-batcher for days, and every other client's job waited behind
it. After `failures_to_down` tries in a row ran into their own timeout, the host is down for
`down_s`: its other URLs (and redirects to it) get the verdict their own timeouts would have given
("could not be fetched"), without a connection.

What counts is what only a host that does not answer costs: a try's own timeout (no connection,
no answer to the request, no DNS answer within it). A fast failure (a refused or reset connection,
a DNS "try again") never counts: it costs a try, not a timeout, so each URL may well find it out
for itself, and one shared blip (a load balancer dropping connections for 0.2 s, one failed lookup
every in-flight try waited on) took the host down for the 64 tries it failed at once, and a
minute of its images with it. Neither does a URL's check running out of its overall time: a host
that answered slowly (503 after 503, a big GIF) did answer. Any answer (an HTTP status, even 404 or
503) resets the count, and a try under way when its host answered does not count when it times
out later: the host was up meanwhile. Tries under way together that all time out do count each:
so is a tarpit found out within one timeout. A host trickling its bytes, each within the read
timeout, is bounded by the check's overall time and `image_budget`, not here.

Kept per client: one client's tarpit never fails another client's images on the same host (a
shared CDN a client made look dead), and each client's count starts afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import Counter

HOSTS_DOWN = Counter("lotlens_image_hosts_down_total",
                     "Image hosts taken as down for a client (tries in a row timed out); its other "
                     "images are unreachable without a connection until the host is tried again")
CHECKS_SPARED = Counter("lotlens_image_checks_spared_total",
                        "Image checks (tries included) given a down host's verdict without a connection")

# (client, scheme, host, port)
_HostKey = tuple[str, str, str, int | None]


@dataclass
class _Host:
    failures: int = 0
    down_until: float = 0.0
    answered_at: float = float("-inf")


class HostHealth:
    """Consecutive timed-out tries per client and image host; used from one event loop."""

    def __init__(self, failures_to_down: int = 3, down_s: float = 60.0, max_hosts: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_down, self.down_s, self.max_hosts = failures_to_down, down_s, max_hosts
        # When a try begins, read from it: `timed_out` compares that with the host's last answer.
        self.clock = clock
        self._hosts: dict[_HostKey, _Host] = {}

    def down(self, client: str, url: str) -> str | None:
        """Why the URL's host is taken as down for this client, or None (it may be tried)."""
        key = _key(client, url)
        host = self._hosts.get(key) if key is not None else None
        if host is None or self.clock() >= host.down_until:
            return None
        CHECKS_SPARED.inc()
        return (f"its host gave no answer to {host.failures} tries in a row; "
                f"not tried again for {self.down_s:g} s")

    def timed_out(self, client: str, url: str, began: float) -> None:
        """A try of the URL, begun at `began` (by `clock`), ran into its own timeout waiting for the
        host: no connection, no answer to the request, or no DNS answer within it."""
        key = _key(client, url)
        if key is None or self.failures_to_down < 1:
            return
        host = self._host(key)
        if began < host.answered_at:
            return  # under way when the host answered another try: slow, not silent
        host.failures += 1
        now = self.clock()
        # Once down, each try after the pause that gets no answer takes it down again at once.
        if host.failures >= self.failures_to_down and now >= host.down_until:
            host.down_until = now + self.down_s
            HOSTS_DOWN.inc()

    def answered(self, client: str, url: str) -> None:
        """The URL's host answered: its count starts over, and it is up."""
        key = _key(client, url)
        if key is not None and self.failures_to_down >= 1:
            host = self._host(key)
            host.failures, host.down_until, host.answered_at = 0, 0.0, self.clock()

    def _host(self, key: _HostKey) -> _Host:
        if key not in self._hosts and len(self._hosts) >= self.max_hosts:
            self._hosts.clear()  # forgetting costs each host `failures_to_down` tries again, no more
        return self._hosts.setdefault(key, _Host())


def _key(client: str, url: str) -> _HostKey | None:
    try:
        parts = urlsplit(url)
        return client, parts.scheme.lower(), parts.hostname or "", parts.port
    except ValueError:  # a port no URL parser reads: its check fails on its own
        return None
