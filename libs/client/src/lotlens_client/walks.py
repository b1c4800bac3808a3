"""Walking every page of a listing while it changes under the walk (no I/O: both clients use it).

The lots listing pages by offset (the job listing too, on a server without `next_cursor`), each
page filtered as of its own reading. A lot or a job that left
the filter between two pages moved every later one a place back, and the one at the page's edge
was never listed (`lotlens lots JOB --status processing --all` on a running job); a job created
meanwhile moved every job a place on, and the one at the edge came twice. The walks keep one
rule: whatever is in the asked state for the whole walk comes exactly once.
"""

from __future__ import annotations

from lotlens_client.errors import LotLensError
from lotlens_client.lot_pages import LotPage, page_after
from lotlens_client.models import TERMINAL_STATES, JobPage, JobState, JobSummary, LotResult


class LotWalk:
    """The pages `iter_lots` asks for (`status_asked`, `offset`; None after the last) and the lots
    it yields of each (`take`).

    A job's lots keep their request order, so unfiltered pages never move under a walk; filtered
    ones do while the job runs. A finished job's lots keep their states, and its pages are filtered
    by the gateway; a running job's are walked unfiltered and filtered here (its first, filtered,
    page only tells the job's state), `offset` then counting the lots in `status`.
    """

    def __init__(self, status: JobState | None, offset: int) -> None:
        self._status = status
        self._decided = status is None
        self._filter_here = False
        self._skip = 0  # lots in `status` still to pass over, when filtered here
        self.offset: int | None = offset

    @property
    def status_asked(self) -> JobState | None:
        """The filter the next page is asked with."""
        return None if self._filter_here else self._status

    def take(self, page: LotPage) -> tuple[LotResult, ...]:
        """The lots of `page` (asked at `offset`) to yield; `offset` moves to the next page."""
        if self.offset is None:
            raise RuntimeError("the walk is over")
        if not self._decided:
            self._decided = True
            if page.status not in TERMINAL_STATES:
                self._filter_here, self._skip, self.offset = True, self.offset, 0
                return ()
        after = page_after(page, self.offset)
        found = page.lots
        if self._filter_here:
            matching = tuple(lot for lot in found if lot.status == self._status)
            found, self._skip = matching[self._skip:], max(0, self._skip - len(matching))
        self.offset = after
        return found


class JobWalk:
    """The pages `iter_jobs` asks for (`status_asked`, `cursor`, `offset`; None after the last) and
    the jobs it yields of each (`take`).

    Newest first, each page after the previous page's `next_cursor`: jobs created during the walk
    come before it and move nothing. From a server without cursors, pages go by offset, and a job
    created during the walk moves the others a place on, so one comes again (passed over here, by
    id). A finished state is never left, so such a filter is the gateway's; a running state can be
    left between pages, so that filter is applied here, to unfiltered pages.

    During a rolling deploy, a page asked by cursor can reach a replica older than cursors, which
    refuses the name (422): the walk then goes on by offset to its end (`refused`), so the replicas
    can answer it in any order.
    """

    def __init__(self, status: JobState | None) -> None:
        self._status = status
        self.status_asked: JobState | None = status if status in TERMINAL_STATES else None
        self._seen: set[str] = set()
        self._by_cursor = True
        self._listed = 0  # jobs from the newest to the end of the last page: the next page's offset
        self.cursor: str | None = None
        self.offset: int | None = 0

    def take(self, page: JobPage) -> list[JobSummary]:
        """The jobs of `page` (asked at `cursor` and `offset`) to yield; both move to the next page."""
        if self.offset is None:
            raise RuntimeError("the walk is over")
        fresh = [job for job in page.jobs if job.job_id not in self._seen
                 and (self._status is None or job.status == self._status)]
        self._seen.update(job.job_id for job in fresh)
        more = page.pagination.has_more and page.jobs
        # A page with more to come and no `next_cursor`, asked by cursor, is from a server that
        # ignored the cursor: it started at the offset asked, as every page asked without one.
        placed_by_cursor = self.cursor is not None and page.pagination.next_cursor is not None
        self._listed = (self._listed if placed_by_cursor else self.offset) + len(page.jobs)
        self.cursor = page.pagination.next_cursor if self._by_cursor else None
        self.offset = None if not more else 0 if self.cursor else self._listed
        return fresh

    def refused(self, error: LotLensError) -> bool:
        """Whether `error`, the answer to the page asked, refused its `cursor` (a 422 naming it);
        then that page and the rest are asked by offset (jobs that come again are passed over)."""
        if self.cursor is None or not _names_cursor(error):
            return False
        self._by_cursor, self.cursor, self.offset = False, None, self._listed
        return True


def _names_cursor(error: LotLensError) -> bool:
    """Whether `error` is a 422 whose `details.errors` name the `cursor` parameter."""
    named = error.details.get("errors")
    return error.status == 422 and isinstance(named, list) and any(
        isinstance(each, dict) and "cursor" in (each.get("loc") or ()) for each in named)
