"""A page of a job's lots (`GET /api/v1/batch-jobs/{job_id}/lots`) and where the next one starts."""

from __future__ import annotations

from dataclasses import dataclass

from lotlens_client.errors import UnexpectedResponseError
from lotlens_client.models import Json, LotResult, Pagination


@dataclass(frozen=True)
class LotPagination(Pagination):
    """Where a page of lots is, and where the next starts (`next_offset`).

    A page holds fewer lots than the `limit` asked for when their JSON would pass the server's byte
    budget: `limit` is then the lots it holds, and `next_offset` is `offset` plus them.
    """

    # None on the last page, and from a server that does not send it.
    next_offset: int | None = None

    @classmethod
    def from_json(cls, data: Json) -> LotPagination:
        """Parse a lots page's `pagination` block."""
        base = Pagination.from_json(data)
        after = data.get("next_offset")
        return cls(limit=base.limit, offset=base.offset, total=base.total, has_more=base.has_more,
                   next_offset=after if isinstance(after, int) else None)


@dataclass(frozen=True)
class LotPage:
    """One page of a job's lots in request order; `status` is the job's."""

    job_id: str
    status: str
    lots: tuple[LotResult, ...]
    pagination: LotPagination

    @classmethod
    def from_json(cls, data: Json) -> LotPage:
        """Parse the lots page."""
        return cls(job_id=str(data["job_id"]), status=str(data["status"]),
                   lots=tuple(LotResult.from_json(lot) for lot in data["lots"]),
                   pagination=LotPagination.from_json(data["pagination"]))

    @property
    def next_offset(self) -> int | None:
        """Where the next page starts, or None after the last.

        The server's `next_offset`; from a server without it, `offset + pagination.limit` (the
        lots this page holds when its bytes cut it short). Never the `limit` asked for: a page cut
        short holds fewer lots, and adding it would skip lots.
        """
        pagination = self.pagination
        if not pagination.has_more or not self.lots:
            return None
        if pagination.next_offset is not None:
            return pagination.next_offset
        return pagination.offset + (pagination.limit or len(self.lots))


def page_after(page: LotPage, offset: int) -> int | None:
    """Where the page after `page` (asked at `offset`) starts, or None after the last; an
    `UnexpectedResponseError` when the answer points back at or before it (the walk never ended)."""
    after = page.next_offset
    if after is not None and after <= offset:
        raise UnexpectedResponseError(200, "INVALID_RESPONSE",
                                      f"The lots page at offset {offset} names {after} as the next one",
                                      {"offset": offset, "next_offset": after})
    return after
