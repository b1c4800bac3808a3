"""The console's addresses in a real browser: what an address it does not know, or a jobs list
filter it cannot show, puts on screen."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import ConsoleStack, FinishedJob, sign_in

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
    # page listed; `limit=7` did the same to "Per page".
    url = console_stack.stack.url
    sign_in(page, console_stack.stack)
    page.goto(f"{url}/console/#/jobs?status=bogus")
    expect(page.get_by_label("Status").locator("option:checked")).to_have_text("Any")
    expect(page.locator("#jobs-caption")).to_contain_text("No status “bogus” is known: jobs of every status.")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    page.goto(f"{url}/console/#/jobs?status=completed&limit=7")
    expect(page.get_by_label("Status").locator("option:checked")).to_have_text("completed")
    expect(page.get_by_label("Per page").locator("option:checked")).to_have_text("25")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
