"""Time in UTC, rendered the way the contract shows it (`2025-08-05T08:30:15Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second with a `Z` suffix, or None. Whole seconds, as the contract
    shows them: with microseconds, most values failed the contract's parse pattern."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
