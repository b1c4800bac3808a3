"""The jobs list's pages in a real browser while jobs keep arriving: "Next page" follows the API's
`next_cursor`, so no job of one page comes again on the next, and its address stays a link to share."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine

from lotlens_common.signing import sign
from tests.conftest import Infra, new_id
from tests.e2e.console.conftest import ConsoleStack, console_stack_running, new_tab, sign_in

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_stack(infra: Infra, engine: Engine,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    """A stack of the module's own: on the package's, its 13 jobs (more than the 10 batch jobs a
    minute a client may submit by default) pushed the package's finished job off the first page
    other modules look for it on."""
    with console_stack_running(infra, engine, tmp_path_factory.mktemp("paging-stack"),
                               {"LOTLENS_RATE_LIMIT_BATCH": "100"}) as console:
        yield console


def submitted(console_stack: ConsoleStack, jobs: int) -> list[str]:
    """`jobs` two-lot jobs (one lot is answered at once, not listed) submitted one after the
    other, newest first as the list shows them."""
    prefix, images = new_id("page"), console_stack.images
    return [console_stack.submit([{"lot_id": f"{prefix}-{n}-{lot}", "additional_info": "Dent",
                                   "image_urls": [f"{images}/{prefix}-{n}-{lot}.png"]} for lot in range(2)],
                                 ["en"])
            for n in range(jobs)][::-1]


def next_listing(page: Page, button: str) -> list[str]:
    """Press `button` and return the job ids of the list it leads to, once that list is drawn."""
    # Every route draws a fresh table: the one marked here is the page left behind.
    page.locator("#job-rows").evaluate("rows => rows.setAttribute('data-left', '')")
    page.get_by_role("button", name=button).click()
    return listed(page)


def listed(page: Page) -> list[str]:
    """The job ids of the list drawn last, once drawn."""
    expect(page.locator("#job-rows:not([data-left]) tr").first).to_be_visible()
    return page.locator("#job-rows:not([data-left]) td:first-child code").all_inner_texts()


def test_next_page_shows_no_job_of_the_page_before_while_new_jobs_arrive(
        page: Page, console_stack: ConsoleStack) -> None:
    # "Next page" asked for `offset=2`: the two jobs submitted while the first page was read
    # pushed that page's two jobs onto the second, and the operator saw them again.
    older = submitted(console_stack, 4)
    sign_in(page, console_stack.stack)
    page.goto(f"{console_stack.stack.url}/console/#/jobs?limit=2")
    first_page = listed(page)
    assert first_page == older[:2]
    submitted(console_stack, 2)
    second_page = next_listing(page, "Next page")
    assert set(first_page) & set(second_page) == set(), f"page 2 repeats page 1: {second_page}"
    assert second_page == older[2:4]
    assert parse_qs(urlsplit(page.url).fragment.partition("?")[2])["limit"] == ["2"]
    # The total is of every job (the API counts those after a cursor only): read without one.
    query = "limit=1"
    every = httpx2.get(f"{console_stack.stack.url}/api/v1/batch-jobs?{query}",
                       headers={"X-Signature": sign(console_stack.stack.client_key, query.encode())})
    expect(page.locator("#jobs-caption")).to_have_text(f"2 of {every.json()['pagination']['total']} jobs, "
                                                       "newest first")


def test_a_later_pages_link_is_shared_and_previous_and_back_lead_to_the_pages_before(
        page: Page, console_stack: ConsoleStack, browser: Browser, page_errors: list[str]) -> None:
    jobs = submitted(console_stack, 5)
    url = console_stack.stack.url
    sign_in(page, console_stack.stack)
    page.goto(f"{url}/console/#/jobs?limit=2")
    assert listed(page) == jobs[:2]
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    assert next_listing(page, "Next page") == jobs[2:4]
    second_page = page.url
    assert "cursor=" in second_page
    assert next_listing(page, "Next page")[0] == jobs[4]
    submitted(console_stack, 1)  # a newer job moves none of the pages after the first
    assert next_listing(page, "Previous page") == jobs[2:4]
    assert page.url == second_page
    newest = next_listing(page, "Previous page")
    assert newest[1:] == jobs[:1]
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    page.locator("#job-rows").evaluate("rows => rows.setAttribute('data-left', '')")
    page.go_back()  # the browser's Back: the page the previous one was left from
    assert listed(page) == jobs[2:4]

    with new_tab(browser, page_errors) as shared:
        sign_in(shared, console_stack.stack)
        shared.goto(second_page)
        assert listed(shared) == jobs[2:4]
        assert next_listing(shared, "Previous page")[1:] == jobs[:1]


def test_a_cursor_the_api_refuses_is_said_and_show_lists_the_first_page(
        page: Page, console_stack: ConsoleStack) -> None:
    # A link cut short or edited by hand names no place in the list: the server's 422 is said in
    # the caption as for an offset that is not a number, with nothing listed.
    jobs = submitted(console_stack, 1)
    caption = page.locator("#jobs-caption")
    sign_in(page, console_stack.stack)
    page.goto(f"{console_stack.stack.url}/console/#/jobs?limit=25&cursor=1754379015123456")
    expect(caption).to_have_text("The server refuses this link’s cursor “1754379015123456”: the link was "
                                 "cut short or changed (no page of the list starts there). "
                                 "Show lists the first page.")
    expect(caption).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#job-rows tr")).to_have_count(0)
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name=jobs[0])).to_be_visible()
    expect(caption).not_to_have_class(re.compile(r"\berror\b"))


def test_previous_page_after_an_old_offset_link_leads_to_the_page_before(
        page: Page, console_stack: ConsoleStack) -> None:
    # Links made before the cursor carry `offset`. "Next page" from one carried no way back to it,
    # and "Previous page" on the page after it listed the first page.
    jobs = submitted(console_stack, 8)
    sign_in(page, console_stack.stack)
    page.goto(f"{console_stack.stack.url}/console/#/jobs?limit=2&offset=4")
    assert listed(page) == jobs[4:6]
    assert next_listing(page, "Previous page") == jobs[2:4]
    assert next_listing(page, "Next page") == jobs[4:6]
    assert next_listing(page, "Previous page") == jobs[2:4], f"Previous page led to {page.url}"
    assert next_listing(page, "Previous page") == jobs[:2]
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
