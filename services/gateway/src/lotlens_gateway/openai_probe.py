"""Is the model API reachable with our key? Checked in the background, read from a cache.

`/health` reports the last answer and, when it is older than `interval_s`, starts one refresh
without waiting for it: a slow or hanging OpenAI never slows a health check, and a storm of
checks makes at most one API call per interval. The call lists one batch (an endpoint both the
real API and the stand-in serve, and one that needs a valid key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import openai
from prometheus_client import Gauge

from lotlens_common.model.errors import error_kind

log = logging.getLogger(__name__)


class OpenAIProbe:
    """Cached reachability of the model API: `unknown` until the first check ends."""

    def __init__(self, client: openai.AsyncOpenAI, gauge: Gauge, interval_s: float = 30.0,
                 timeout_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client.with_options(max_retries=0, timeout=timeout_s)
        self._gauge = gauge
        self._interval_s = interval_s
        self._clock = clock
        self._status = "unknown"
        self._checked_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    def status(self) -> str:
        """`reachable`, `unauthorized`, `unreachable` or `unknown`; refreshes in the background."""
        stale = self._checked_at is None or self._clock() - self._checked_at >= self._interval_s
        if stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._check())
        return self._status

    async def _check(self) -> None:
        try:
            await self._client.batches.list(limit=1)
            self._status = "reachable"
        except Exception as exc:  # any failure is "not reachable"; the kind tells which
            self._status = "unauthorized" if error_kind(exc) == "authentication" else "unreachable"
            log.warning("model API check failed: %s", exc)
        self._checked_at = self._clock()
        self._gauge.set(1 if self._status == "reachable" else 0)
