"""The retry schedule: when the next attempt is due, if any. Pure functions, no I/O."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime


def next_delay_s(attempts_made: int, intervals: Sequence[float], jitter: float,
                 retry_after_s: float | None = None, retry_after_cap_s: float = 3600.0,
                 rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones, or None when none is left.

    Attempt 1 goes at once; attempt n+1 waits `intervals[n-1]`, spread by ± `jitter` of itself.
    An endpoint's `Retry-After` (capped) is honoured when it asks for longer.
    """
    if attempts_made < 1 or attempts_made > len(intervals):
        return None
    base = intervals[attempts_made - 1]
    spread = (rng or random).uniform(-jitter, jitter) if jitter > 0 else 0.0
    delay = max(0.0, base * (1.0 + spread))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, retry_after_cap_s))
    return delay


def next_attempt_at(now: datetime, delay_s: float) -> datetime:
    """The moment an attempt `delay_s` from now is due."""
    return now + timedelta(seconds=delay_s)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked by a `Retry-After` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    # RFC 9110's delay-seconds is ASCII digits: `isdigit` alone also says yes to "²" and "١٢",
    # and `float("²")` raised out of the attempt instead of recording the receiver's 503.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # asctime, the third HTTP-date format, has no zone: it is GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())
