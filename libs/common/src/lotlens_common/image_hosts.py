"""Image hosts that give no answer, taken as down for a while, one client's at a time.

A host that accepts connections and never answers (or trickles bytes, or refuses them, or whose
DNS never answers) cost each of its URLs a full check: every try to its timeout, and two more
tries after it. One job of 50,000 lots with 20 such URLs each held a vision-batcher for days, and
every other client's job waited behind it. After `failures_to_down` tries in a row got no answer,
the host is down for `down_s`: its other URLs get the verdict their own timeouts would have given
("could not be fetched"), without a connection. Any answer (an HTTP status, even 404 or 503)
resets the count: such a host costs a request, not a timeout.

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
                     "Image hosts taken as down for a client (tries in a row got no answer); its other "
                     "images are unreachable without a connection until the host is tried again")
CHECKS_SPARED = Counter("lotlens_image_checks_spared_total",
                        "Image checks (tries included) given a down host's verdict without a connection")

# (client, scheme, host, port)
_HostKey = tuple[str, str, str, int | None]


@dataclass
class _Host:
    failures: int = 0
    down_until: float = 0.0


class HostHealth:
    """Consecutive unanswered tries per client and image host; used from one event loop."""

    def __init__(self, failures_to_down: int = 3, down_s: float = 60.0, max_hosts: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_down, self.down_s, self.max_hosts = failures_to_down, down_s, max_hosts
        self._clock = clock
        self._hosts: dict[_HostKey, _Host] = {}

    def down(self, client: str, url: str) -> str | None:
        """Why the URL's host is taken as down for this client, or None (it may be tried)."""
        key = _key(client, url)
        host = self._hosts.get(key) if key is not None else None
        if host is None or self._clock() >= host.down_until:
            return None
        CHECKS_SPARED.inc()
        return (f"its host gave no answer to {host.failures} tries in a row; "
                f"not tried again for {self.down_s:g} s")

    def failed(self, client: str, url: str) -> None:
        """A try of the URL got no answer (a timeout, a refused or dropped connection, no DNS answer)."""
        key = _key(client, url)
        if key is None or self.failures_to_down < 1:
            return
        if key not in self._hosts and len(self._hosts) >= self.max_hosts:
            self._hosts.clear()  # forgetting costs each host `failures_to_down` tries again, no more
        host = self._hosts.setdefault(key, _Host())
        host.failures += 1
        now = self._clock()
        # Once down, each try after the pause that gets no answer takes it down again at once.
        if host.failures >= self.failures_to_down and now >= host.down_until:
            host.down_until = now + self.down_s
            HOSTS_DOWN.inc()

    def answered(self, client: str, url: str) -> None:
        """The URL's host answered: its count starts over."""
        key = _key(client, url)
        if key is not None:
            self._hosts.pop(key, None)


def _key(client: str, url: str) -> _HostKey | None:
    try:
        parts = urlsplit(url)
        return client, parts.scheme.lower(), parts.hostname or "", parts.port
    except ValueError:  # a port no URL parser reads: its check fails on its own
        return None
