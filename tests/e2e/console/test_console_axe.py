"""Every state of the console a user meets, checked by axe-core against WCAG 2.2 AA (see axe.py).

No rule is allowed to fail: each violation is listed with its state, rule, impact and element.
The package's stack and jobs are the other modules'; failures are staged with Playwright's `route`."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.conftest import new_id
from tests.e2e.console.axe import axe_violations
from tests.e2e.console.conftest import ConsoleStack, FinishedJob, new_tab, open_job, sign_in

pytestmark = pytest.mark.e2e
NO_JOBS = {"jobs": [], "pagination": {"limit": 25, "offset": 0, "total": 0, "has_more": False,
                                      "next_offset": None}}


@pytest.fixture()
def page(browser: Browser, page_errors: list[str]) -> Iterator[Page]:
    """A fresh tab that lets the test add axe: the console's CSP refuses inline scripts."""
    with new_tab(browser, page_errors, bypass_csp=True) as tab:
        yield tab


def report(violations: list[str]) -> str:
    return f"{len(violations)} WCAG violation(s):\n" + "\n".join(violations)


def test_the_sign_in_page_passes_axe_empty_and_with_each_error(
        page: Page, console_stack: ConsoleStack) -> None:
    page.goto(f"{console_stack.stack.url}/console/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    found = axe_violations(page, "sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Enter the shared key.")
    found += axe_violations(page, "sign-in, no key")
    page.get_by_label("Shared key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The server accepts no client with this key.")
    found += axe_violations(page, "sign-in, key refused")
    page.locator(".skip").focus()  # shown on screen only while focused
    found += axe_violations(page, "sign-in, skip link focused")
    assert found == [], report(found)


def test_the_jobs_list_passes_axe_with_jobs_filtered_empty_and_refused(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    url, caption = console_stack.stack.url, page.locator("#jobs-caption")
    sign_in(page, console_stack.stack)
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    found = axe_violations(page, "jobs")
    page.goto(f"{url}/console/#/jobs?status=completed&limit=10")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    found += axe_violations(page, "jobs, filtered")
    page.goto(f"{url}/console/#/jobs?limit=25&offset=2O")
    expect(caption).to_have_class(re.compile(r"\berror\b"))
    found += axe_violations(page, "jobs, link refused")
    page.goto(f"{url}/console/#/jobs?limit=25&cursor=9999999999999999.z")  # a later page: Previous enabled
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    expect(page.get_by_role("button", name="Previous page")).to_be_enabled()
    found += axe_violations(page, "jobs, a later page")
    page.goto(f"{url}/console/#/jobs?limit=25&cursor=9999999999999999")
    expect(caption).to_have_class(re.compile(r"\berror\b"))
    found += axe_violations(page, "jobs, cursor refused")
    page.route("**/api/v1/batch-jobs?*", lambda route: route.fulfill(json=NO_JOBS))
    page.goto(f"{url}/console/#/jobs?status=cancelled")
    expect(caption).to_have_text("No jobs match these filters.")
    found += axe_violations(page, "jobs, none")
    assert found == [], report(found)


def test_a_finished_jobs_page_passes_axe_with_failed_lots_missing_images_deliveries_and_usage(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    open_job(page, console_stack, finished_job.job_id)
    expect(page.locator("#lots li.lot")).to_have_count(3)
    expect(page.locator("#lots")).to_contain_text(finished_job.missing_url)
    expect(page.locator("#delivery-rows tr").first).to_contain_text("delivered")
    expect(page.get_by_role("heading", name="Usage and cost")).to_be_visible()
    page.locator("#delivery-rows summary").first.click()  # the attempts, opened
    found = axe_violations(page, "finished job")
    page.get_by_label("Only failed lots").check()
    expect(page.locator("#lots-note")).to_have_text("1 failed lots, 1 shown.")
    found += axe_violations(page, "finished job, only failed lots")
    assert found == [], report(found)


def test_a_running_jobs_page_passes_axe_and_paused_with_a_failed_read_said(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    open_job(page, console_stack, waiting_job)
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    expect(page.locator("#lots-note")).to_contain_text("The job is running")
    found = axe_violations(page, "running job")

    def refuse(route: Route) -> None:  # every read: the message stays while axe reads the page
        route.fulfill(status=503, headers={"Retry-After": "60"}, json={"error": "Service unavailable",
                      "message": "The database is unavailable", "code": "SERVICE_UNAVAILABLE"})

    page.route("**/api/v1/batch-status/**", refuse)
    page.get_by_role("button", name="Pause updates").click()
    expect(page.get_by_role("button", name="Resume updates")).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#action-result")).to_contain_text("The database is unavailable")
    found += axe_violations(page, "running job, paused, status read failed")
    assert found == [], report(found)


def test_a_job_not_found_and_an_unknown_address_pass_axe(page: Page, console_stack: ConsoleStack) -> None:
    job_id = new_id("nojob")
    open_job(page, console_stack, job_id)
    expect(page.locator("#action-result")).to_have_text(f"Job {job_id} not found (JOB_NOT_FOUND)")
    found = axe_violations(page, "job not found")
    page.goto(f"{console_stack.stack.url}/console/#/nowhere")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    found += axe_violations(page, "not-found route")
    assert found == [], report(found)
