"""The console's addresses in a real browser: what an address it does not know, or a jobs list
filter, page size or offset it cannot show, puts on screen."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from playwright.sync_api import Page, expect

from lotlens_common.signing import sign
from tests.e2e.console.conftest import ConsoleStack, FinishedJob, sign_in
from tests.e2e.console.polls import counted

pytestmark = pytest.mark.e2e


def test_an_unknown_address_says_page_not_found_with_a_link_back_to_the_jobs(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # A broken link (`#/nowhere`, a job's address with a tail) showed the jobs list: the user
    # believed the page they were sent to was that list.
    url = console_stack.stack.url
    sign_in(page, console_stack.stack)
    for address in ("#/nowhere", f"#/jobs/{finished_job.job_id}/lots"):
        page.goto(f"{url}/console/{address}")
        expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
        expect(page.get_by_role("table")).to_have_count(0)
    page.get_by_role("link", name="All jobs").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()


def test_a_filter_value_the_list_does_not_offer_falls_back_to_one_it_shows_selected(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # `#/jobs?status=bogus` left the Status control blank (no option selected) under whatever the
    # page listed; `limit=7` did the same to "Per page" (now listed 7 a page, see below).
    url = console_stack.stack.url
    sign_in(page, console_stack.stack)
    page.goto(f"{url}/console/#/jobs?status=bogus")
    expect(page.get_by_label("Status").locator("option:checked")).to_have_text("Any")
    expect(page.locator("#jobs-caption")).to_contain_text("No status “bogus” is known: jobs of every status.")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    page.goto(f"{url}/console/#/jobs?status=completed&limit=seven")
    expect(page.get_by_label("Status").locator("option:checked")).to_have_text("completed")
    expect(page.get_by_label("Per page").locator("option:checked")).to_have_text("25")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()


LISTINGS = re.compile(r"/api/v1/batch-jobs\?")


def test_a_page_size_the_api_accepts_is_listed_and_shown_and_another_is_said(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # `limit=33` (1 to 100 in API.md) listed 25 a page, and its user believed they saw 33.
    url, caption = console_stack.stack.url, page.locator("#jobs-caption")
    per_page = page.get_by_label("Per page")
    sign_in(page, console_stack.stack)
    listings = counted(page, LISTINGS)
    with page.expect_response(LISTINGS):
        page.goto(f"{url}/console/#/jobs?limit=33")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    assert parse_qs(urlsplit(listings[-1]).query)["limit"] == ["33"]
    expect(per_page.locator("option:checked")).to_have_text("33")
    expect(per_page.locator("option")).to_have_text(["10", "25", "33", "100"])
    for asked in ("abc", "0", "101"):
        with page.expect_response(LISTINGS):
            page.goto(f"{url}/console/#/jobs?limit={asked}")
        expect(caption).to_contain_text(f"No page size “{asked}” (1 to 100): 25 a page.")
        assert parse_qs(urlsplit(listings[-1]).query)["limit"] == ["25"]
        expect(per_page.locator("option:checked")).to_have_text("25")
        expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()


def test_an_offset_that_is_not_a_number_is_refused_as_the_api_refuses_it(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # `offset=2O` (a hand-edited or cut link) was read as 0: the first page, as if it had been asked for.
    url, caption = console_stack.stack.url, page.locator("#jobs-caption")
    query = "limit=25&offset=2O"
    direct = httpx2.get(f"{url}/api/v1/batch-jobs?{query}",
                        headers={"X-Signature": sign(console_stack.stack.client_key, query.encode())})
    assert (direct.status_code, direct.json()["code"]) == (422, "VALIDATION_ERROR"), direct.text
    assert [error["loc"] for error in direct.json()["details"]["errors"]] == [["query", "offset"]]
    sign_in(page, console_stack.stack)
    page.goto(f"{url}/console/#/jobs?{query}")
    expect(caption).to_contain_text("The server refuses this link’s offset “2O”: Input should be a valid")
    expect(caption).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#job-rows tr")).to_have_count(0)
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Show").click()  # the first page, asked for
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    expect(caption).not_to_have_class(re.compile(r"\berror\b"))
