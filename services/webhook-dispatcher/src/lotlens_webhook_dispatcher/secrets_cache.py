"""Each client's live `whsec_` secrets, read from the gateway's table and kept a few seconds.

Hundreds of attempts a second would otherwise read the same rows each time. A rotation reaches
the next POST, cached or not: each attempt's mark (`post_marks`) checks its client's secrets
against the version the attempt read and returns them when they changed (kept until `ttl_s` ran
out, a `rotate --overlap-hours 0` left the old secret alone signing, refused by every receiver
switched to the new one, and during an overlap the new secret did not sign yet). A secret whose
overlap ends stops signing at that very moment, cached or not: each is kept with its end.

An attempt reads its secrets before its mark (`signing`), where PostgreSQL's refusal hands the
claim back unspent, and never after it (`after_mark`), where nothing could: a read there that
failed spent an attempt of five unsent, and one that fell back on the secrets read before signed
a POST racing a rotation with the old secret alone, refused by a receiver already switched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from lotlens_common import webhook_secrets
from lotlens_common.webhook_secrets import Signing


class SecretsCache:
    """`signing(client_id)` before an attempt's mark, `after_mark(...)` after it."""

    def __init__(self, engine: Engine, ttl_s: float, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[str, tuple[float, Signing]] = {}
        self._lock = threading.Lock()

    def signing(self, client_id: str) -> Signing:
        """The client's secrets, at most `ttl_s` old; raises what PostgreSQL raised."""
        with self._lock:
            hit = self._cached.get(client_id)
        if hit is not None and time.monotonic() - hit[0] < self._ttl_s:
            return hit[1]
        with self._engine.connect() as conn:
            found = webhook_secrets.signing(conn, client_id, self._clock())
        self._keep(client_id, found)
        return found

    def after_mark(self, client_id: str, read_before: Signing, changed: Signing | None) -> list[str]:
        """The secrets that sign an attempt whose mark found its client's secrets `changed` since
        `read_before` (None: unchanged); those read before when the change left none live (the
        client deleted as the POST started: the attempt is sent, not spent unsent)."""
        if changed is not None:
            self._keep(client_id, changed)
        now = self._clock()
        return (changed or read_before).live(now) or read_before.live(now)

    def _keep(self, client_id: str, found: Signing) -> None:
        with self._lock:
            self._cached[client_id] = (time.monotonic(), found)
