"""The WCAG 2.2 AA points of the console that axe cannot see (test_console_axe.py checks the rest):
each page's title. The package's stack and jobs, as the other modules use them."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import ConsoleStack, FinishedJob, sign_in

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
