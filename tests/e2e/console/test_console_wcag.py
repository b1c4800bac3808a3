"""The WCAG 2.2 AA points of the console that axe cannot see (test_console_axe.py checks the rest):
each page's title, the jobs list's count said as a status message, where the keyboard is left
after "Show more lots". The package's stack and jobs, as the other modules use them."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import (
    LOTS_PER_PAGE,
    WAITING_LOTS,
    ConsoleStack,
    FinishedJob,
    open_job,
    sign_in,
)

pytestmark = pytest.mark.e2e


def test_each_page_has_a_title_of_its_own(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # WCAG 2.4.2: every page was titled "LotLens console": a screen reader said nothing of where a
    # link led, and the tab strip and the history could not tell one job from another.
    url = console_stack.stack.url
    page.goto(f"{url}/console/")
    expect(page).to_have_title("Sign in – LotLens console")
    sign_in(page, console_stack.stack)
    expect(page).to_have_title("Jobs – LotLens console")
    page.get_by_role("link", name=finished_job.job_id).click()
    expect(page).to_have_title(f"Job {finished_job.job_id} – LotLens console")
    page.goto(f"{url}/console/#/nowhere")
    expect(page).to_have_title("Page not found – LotLens console")


def test_the_jobs_lists_count_and_its_refusals_are_status_messages(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # WCAG 4.1.3: the list's count ("25 of 300 jobs", "No jobs match these filters.") and a
    # refused link's message arrive after the focus has moved to the heading, in a caption no
    # screen reader follows: after Show, its user heard "Jobs, heading" and nothing of the result.
    sign_in(page, console_stack.stack)
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^\d+ of \d+ jobs?, newest first$"))
    page.goto(f"{console_stack.stack.url}/console/#/jobs?limit=25&offset=2O")
    expect(page.get_by_role("status")).to_contain_text("The server refuses this link’s offset “2O”")
    # Still the table's caption: the table is named by what it lists.
    expect(page.get_by_role("table", name=re.compile("The server refuses this link"))).to_be_visible()


def test_show_more_lots_leaves_the_keyboard_on_the_first_lot_it_added(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # WCAG 2.4.3: the button is hidden while it reads (and for good after the last page): the focus
    # fell to the page's body, and a screen reader user was left nowhere near the lots just shown.
    open_job(page, console_stack, waiting_job)
    expect(page.locator("#lots li.lot")).to_have_count(LOTS_PER_PAGE)
    page.get_by_role("button", name="Show more lots").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)
    first_added = page.locator("#lots li.lot").nth(LOTS_PER_PAGE).get_by_role("heading")
    expect(first_added).to_be_focused()
    expect(first_added).to_have_css("outline-style", "solid")  # WCAG 2.4.7: where the focus is, seen
