"""Each client's live `whsec_` secrets, read from the gateway's table and kept a few seconds.

Hundreds of attempts a second would otherwise read the same rows each time. A rotation reaches
the next POST, cached or not: each attempt's mark (`post_marks`) reads its client's secrets
version, and secrets kept at another version are read again (kept until `ttl_s` ran out, a
`rotate --overlap-hours 0` left the old secret alone signing, refused by every receiver switched
to the new one, and during an overlap the new secret did not sign yet). A secret whose overlap
ends stops signing at that very moment, cached or not: each is kept with its end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from lotlens_common import webhook_secrets
from lotlens_common.webhook_secrets import Signing

# No version known to compare with (the secrets' first read, before any mark).
ANY_VERSION = object()


class SecretsCache:
    """`secrets(client_id, version)`: the client's live secrets, current first, at most `ttl_s`
    old and of `version` (when given)."""

    def __init__(self, engine: Engine, ttl_s: float, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[str, tuple[float, Signing]] = {}
        self._lock = threading.Lock()

    def secrets(self, client_id: str, version: object = ANY_VERSION) -> list[str]:
        """The client's live secrets (empty when the gateway has not made one yet); `version`: the
        version a mark read (`Held.secrets_version`), secrets kept at another are read again."""
        with self._lock:
            hit = self._cached.get(client_id)
        now = self._clock()
        if (hit is not None and time.monotonic() - hit[0] < self._ttl_s
                and version in (ANY_VERSION, hit[1].version)):
            found = hit[1]
        else:
            with self._engine.connect() as conn:
                found = webhook_secrets.signing(conn, client_id, now)
            with self._lock:
                self._cached[client_id] = (time.monotonic(), found)
        return found.live(now)
