"""`GET /api/v1/batch-jobs` queries written by hand, as the contract invites: the signature covers
the raw query string, so integrators build it as text (`f"created_after={moment.isoformat()}"`),
sign it and send it as it is, never through a form encoder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots

pytestmark = pytest.mark.integration

BASE = datetime(2025, 8, 5, 7, 30, tzinfo=UTC)


def jobs_an_hour_apart(gateway: Gateway, engine: Engine, count: int) -> list[str]:
    """The client's finished jobs created at BASE, BASE + 1 h, …; their ids, oldest first."""
    return [insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"],
                                created_at=BASE + timedelta(hours=hours)) for hours in range(count)]


def listed(gateway: Gateway, query: str) -> list[str]:
    """The job ids a raw query lists (it must be answered 200)."""
    response = gateway.list_jobs(query)
    assert response.status_code == 200, f"{query}: {response.status_code} {response.text}"
    return [job["id"] for job in response.json()["jobs"]]


@pytest.mark.parametrize("moment", [
    # Python's `datetime.isoformat()` of an aware time, and the same with `+HHMM` and a fraction.
    "2025-08-05T11:30:00+03:00", "2025-08-05T11:30:00+0300", "2025-08-05T11:29:59.750+03:00",
    "2025-08-05T08:30:00+00:00"])
def test_a_time_filter_with_a_positive_utc_offset_sent_unencoded_is_read_with_that_offset(
        gateway: Gateway, engine: Engine, moment: str) -> None:
    # In a query `+` decodes to a space: `…T11:30:00+03:00` reached the filter as `…T11:30:00 03:00`
    # and was 422 "unexpected extra characters", though the client sent (and signed) a valid time.
    oldest, middle, newest = jobs_an_hour_apart(gateway, engine, 3)
    assert listed(gateway, f"created_after={moment}") == [newest, middle]
    assert listed(gateway, f"created_before={moment}") == [oldest]
    # Percent-encoded, the same time filters the same way.
    assert listed(gateway, f"created_after={moment.replace('+', '%2B')}") == [newest, middle]


def test_a_time_filter_with_a_negative_offset_or_a_space_before_the_time_is_read_as_before(
        gateway: Gateway, engine: Engine) -> None:
    oldest, middle, newest = jobs_an_hour_apart(gateway, engine, 3)
    assert listed(gateway, "created_after=2025-08-05T04:30:00-04:00") == [newest, middle]
    # A space (`+`) between date and time, without an offset: UTC, as before.
    assert listed(gateway, "created_before=2025-08-05+08:30:00") == [oldest]
    assert listed(gateway, "created_before=2025-08-05+11:30+03:00") == [oldest]


def test_the_contracts_listing_template_with_nothing_filled_in_lists_the_first_page(
        gateway: Gateway, engine: Engine) -> None:
    # API.md writes the listing `?status=&limit=(≤100, default 10)&offset=&created_after=&created_before=`
    # and its OpenAPI description says "a value may be empty: no filter"; an empty `limit` or
    # `offset` (a template's unfilled `offset=${OFFSET}` on the first page) was 422 "unable to parse
    # string as an integer".
    ids = jobs_an_hour_apart(gateway, engine, 12)
    for query in ("status=&limit=&offset=&created_after=&created_before=", "offset=", "limit=&offset="):
        response = gateway.list_jobs(query)
        assert response.status_code == 200, f"{query}: {response.status_code} {response.text}"
        body = response.json()
        cursor = body["pagination"]["next_cursor"]
        assert body["pagination"] == {"limit": 10, "offset": 0, "total": 12, "has_more": True,
                                      "next_cursor": cursor}, query
        assert cursor.endswith(f".{ids[::-1][9]}"), query
        assert [job["id"] for job in body["jobs"]] == ids[::-1][:10], query
    assert listed(gateway, "limit=5&offset=") == ids[::-1][:5]
    assert listed(gateway, "limit=&offset=10") == ids[::-1][10:]
