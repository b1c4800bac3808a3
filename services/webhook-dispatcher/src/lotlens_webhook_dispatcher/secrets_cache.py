"""Each client's live `whsec_` secrets, read from the gateway's table and kept a few seconds.

Hundreds of attempts a second would otherwise read the same rows each time. A rotation reaches
the next POST, cached or not: each attempt's mark (`post_marks`) reads its client's secrets
version, and secrets kept at another version are read again (kept until `ttl_s` ran out, a
`rotate --overlap-hours 0` left the old secret alone signing, refused by every receiver switched
to the new one, and during an overlap the new secret did not sign yet). A secret whose overlap
ends stops signing at that very moment, cached or not: each is kept with its end.

An attempt reads its secrets twice: before its mark (`signing`), where PostgreSQL's refusal hands
the claim back unspent, and after it (`at_version`), where nothing can: that one never fails on
PostgreSQL. It reads only when the mark saw another version, and signs with the secrets read
before the mark when the read fails or finds none (a `clients delete` as the POST started): a read
that failed there spent an attempt of five unsent, a failure the receiver never saw.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from lotlens_common import webhook_secrets
from lotlens_common.webhook_secrets import Signing

log = logging.getLogger(__name__)


class SecretsCache:
    """`signing(client_id)` before an attempt's mark, `at_version(...)` after it."""

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
        return self._read(client_id)

    def at_version(self, client_id: str, version: datetime | None, read_before: Signing) -> list[str]:
        """The client's live secrets at `version` (the one its mark read, `Held.secrets_version`),
        however old; those `read_before` the mark when they cannot be read or are gone."""
        with self._lock:
            hit = self._cached.get(client_id)
        if read_before.version == version:
            found = read_before
        elif hit is not None and hit[1].version == version:
            found = hit[1]
        else:
            try:
                found = self._read(client_id)
            except SQLAlchemyError as exc:
                log.warning("secrets of client %r changed but could not be read again, signed with "
                            "those read before: %s", client_id, str(exc).splitlines()[0])
                found = read_before
        now = self._clock()
        return found.live(now) or read_before.live(now)

    def _read(self, client_id: str) -> Signing:
        with self._engine.connect() as conn:
            found = webhook_secrets.signing(conn, client_id, self._clock())
        with self._lock:
            self._cached[client_id] = (time.monotonic(), found)
        return found
