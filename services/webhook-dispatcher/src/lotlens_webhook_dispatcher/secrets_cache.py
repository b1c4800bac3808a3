"""Each client's live `whsec_` secrets, read from the gateway's table and kept a few seconds.

Hundreds of attempts a second would otherwise read the same rows each time; a rotation or a new
secret reaches deliveries within `ttl_s`. A secret whose overlap ends stops signing at that very
moment, cached or not: each is kept with its end (kept as a bare list, an ended secret went on
signing until the next read).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from lotlens_common import webhook_secrets


class SecretsCache:
    """`secrets(client_id)`: the client's live secrets, current first, at most `ttl_s` old."""

    def __init__(self, engine: Engine, ttl_s: float, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[str, tuple[float, list[tuple[str, datetime | None]]]] = {}
        self._lock = threading.Lock()

    def secrets(self, client_id: str) -> list[str]:
        """The client's live secrets (empty when the gateway has not made one yet)."""
        with self._lock:
            hit = self._cached.get(client_id)
        now = self._clock()
        if hit is not None and time.monotonic() - hit[0] < self._ttl_s:
            found = hit[1]
        else:
            with self._engine.connect() as conn:
                found = webhook_secrets.live_until(conn, client_id, now)
            with self._lock:
                self._cached[client_id] = (time.monotonic(), found)
        return [secret for secret, ends in found if ends is None or ends > now]
