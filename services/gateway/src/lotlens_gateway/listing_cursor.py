"""Where a page of `GET /api/v1/batch-jobs` ended, exactly: the listing's cursor.

The listing is ordered newest first to the microsecond, then by job id, while every time the API
shows is whole seconds (the contract's format). No time a client was shown can mark the end of a
page inside a second: paged by the oldest `created_at` shown as the next `created_before`
(exclusive), 25 jobs made in one second lost the 15 that did not fit on a page of 10. A cursor
names the page's last job by the pair the order is on, so the next page starts right after it,
whatever jobs share its second and however many jobs arrive meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lotlens_common.read_models import JobView

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# `<microseconds since 1970>.<job id>`, or `null.<job id>` after a job without a creation time:
# only characters a query carries unencoded, so the string the client signs is the one it was
# given. Job ids are UUIDs (tests' ids are `job-<hex>`).
CURSOR_PATTERN = r"^([0-9]{1,16}|null)\.[0-9A-Za-z_-]{1,100}$"
_UNDATED = "null"


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _position(created: datetime | None, job_id: str) -> tuple[bool, int, str]:
    # A row the result-store wrote before the job's `JobSubmitted`, whose outbox row is gone
    # (pruned once published; a rebuild after topic retention), has no creation time.
    return (created is not None, -_micros(created) if created is not None else 0, job_id)


def listing_position(job: JobView) -> tuple[bool, int, str]:
    """The listing's order, as PostgreSQL sorts `created_at DESC, job_id`: jobs without a creation
    time first (NULLs lead a descending order), then newest first, to the microsecond."""
    return _position(job.created_at, job.job_id)


@dataclass(frozen=True)
class ListingCursor:
    """The last job of a page: the next page lists the jobs after it in the listing's order."""

    created_at: datetime | None
    job_id: str

    @classmethod
    def parse(cls, text: str) -> ListingCursor:
        """The cursor a `next_cursor` wrote (`text` already matched `CURSOR_PATTERN`)."""
        micros, _, job_id = text.partition(".")
        return cls(None if micros == _UNDATED else _EPOCH + int(micros) * _MICROSECOND, job_id)

    @classmethod
    def after(cls, job: JobView) -> ListingCursor:
        """The cursor of the page that ends with `job`."""
        return cls(job.created_at, job.job_id)

    def __str__(self) -> str:
        micros = _UNDATED if self.created_at is None else _micros(self.created_at)
        return f"{micros}.{self.job_id}"

    def precedes(self, job: JobView) -> bool:
        """Whether `job` comes after this cursor in the listing."""
        return listing_position(job) > _position(self.created_at, self.job_id)
