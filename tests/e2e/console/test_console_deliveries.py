"""A job's webhook deliveries on its page: which read is shown, and reads after the job ended. The
same stack as test_console.py (package fixtures); late answers are staged with Playwright's `route`,
and the time between reads runs on Playwright's fake clock, one timer of the page at a time."""

from __future__ import annotations

import re

import httpx2
import pytest
from playwright.sync_api import APIResponse, Page, Route, expect

from tests.conftest import new_id
from tests.e2e.console.conftest import ConsoleStack, FinishedJob, open_job, until_held
from tests.e2e.console.polls import DELIVERIES, STATUS, Polls, counted, follow_until_stopped, pending_delivery
from tests.polling import wait_for

pytestmark = pytest.mark.e2e


def deliveries(console: ConsoleStack, job_id: str) -> list[dict[str, object]]:
    """The job's deliveries as the API lists them."""
    answer = httpx2.get(f"{console.stack.url}/api/v1/batch-jobs/{job_id}/webhooks",
                        headers=console.headers(job_id))
    assert answer.is_success, answer.text
    return list(answer.json()["deliveries"])


def hooked_job(console: ConsoleStack) -> str:
    """A two-lot job (one lot is described at once, not as a job) naming the package's receiver."""
    lots = [new_id("hook") for _ in range(2)]
    return console.submit([{"lot_id": lot_id, "additional_info": "Dent",
                            "image_urls": [f"{console.images}/{lot_id}.png"]} for lot_id in lots],
                          ["en"], webhook=True)


def test_a_deliveries_read_answered_after_a_newer_one_changes_nothing(
        page: Page, console_stack: ConsoleStack) -> None:
    # Deliveries had no read counter: a Refresh's read answered after Redeliver's re-reads put the
    # list back as it was before the redelivery, under "Redelivery attempted: see the newest row."
    job_id = hooked_job(console_stack)
    wait_for(lambda: [d["status"] for d in deliveries(console_stack, job_id)] == ["delivered"],
             "the delivery delivered", timeout_s=120, every_s=0.3)
    rows = page.locator("#delivery-rows tr")
    open_job(page, console_stack, job_id)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("delivered")
    held: list[tuple[Route, APIResponse]] = []

    def hold_first_answer(route: Route) -> None:
        """Read the first deliveries read's answer now, and give it to the page only later."""
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    page.route(DELIVERIES, hold_first_answer)
    page.get_by_role("button", name="Refresh").click()
    late, answer = until_held(page, held)
    page.get_by_role("button", name="Redeliver webhooks").click()
    expect(page.locator("#redeliver-result")).to_have_text("Redelivery attempted: see the newest row.")
    expect(rows).to_have_count(2)
    with page.expect_response(lambda response: response.request == late.request):
        late.fulfill(response=answer)
    page.wait_for_timeout(500)  # what the late answer would do is done by now
    assert rows.count() == 2, rows.all_inner_texts()


def test_a_webhook_sent_after_the_page_saw_the_job_end_shows_up_without_a_refresh(
        page: Page, console_stack: ConsoleStack) -> None:
    # The deliveries were read once, when the page saw the job end, which is before its webhook
    # goes: "No deliveries recorded." stayed until the user pressed Refresh (as did a delivery
    # pending between retries). Staged: the webhook dispatcher is stopped until the page says so.
    stack, rows = console_stack.stack, page.locator("#delivery-rows tr")
    stack.kill("webhook-dispatcher")
    try:
        job_id = hooked_job(console_stack)
        open_job(page, console_stack, job_id)
        expect(page.locator("#job-summary .badge")).to_have_text("completed")
        expect(rows).to_have_text(["No deliveries recorded."])
    finally:
        stack.start("webhook-dispatcher")
    # Read again 2 s doubling to a minute apart while nothing changes: up to a minute more.
    expect(rows.first).to_contain_text("delivered", timeout=90_000)
    # Every delivery has ended: the page stops reading, and has nothing left to pause.
    expect(page.get_by_role("button", name="Pause updates")).to_be_hidden()


def test_attempts_opened_while_a_delivery_is_pending_stay_open_and_focused_as_it_is_read_again(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # Read again at each poll while a delivery is pending, the table is rebuilt: the attempts a user
    # opened must not close every 2 s, nor the keyboard's place go back to the top of the page.
    # Staged: a delivery pending between retries.
    page.route(DELIVERIES, lambda route: route.fulfill(json={
        "job_id": finished_job.job_id, "deliveries": [pending_delivery(1)],
        "pagination": {"limit": 100, "offset": 0, "total": 1, "has_more": False}}))
    open_job(page, console_stack, finished_job.job_id)
    details = page.locator("#delivery-rows details")
    details.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(details).to_have_attribute("open", "")
    for _ in range(2):  # once the second has been read, the first has been drawn
        page.wait_for_event("request", lambda sent: DELIVERIES.search(sent.url) is not None)
    expect(details.get_by_role("listitem")).to_contain_text("HTTP 503")
    assert details.get_attribute("open") == ""
    assert page.evaluate("document.activeElement.closest('details')?.dataset.delivery") == "pending-1"


def test_a_finished_job_whose_webhooks_do_not_come_is_read_ever_less_often_and_no_more_after_30_minutes(
        page: Page, console_stack: ConsoleStack) -> None:
    # While an ended job's deliveries were unsettled (none yet, one pending, a redelivery's rows
    # not come) each open tab read its status and deliveries every 2 s for as long as it stayed
    # open: 60-90 signed requests a minute against the client's 1000, so fifteen tabs pushed the
    # client's own polling into 429s. Staged: the webhook dispatcher is down for an hour of the
    # page's (fake) clock.
    stack, note = console_stack.stack, page.locator("#action-result")
    statuses, deliveries_reads = counted(page, STATUS), counted(page, DELIVERIES)
    resume = page.get_by_role("button", name="Resume updates")
    stack.kill("webhook-dispatcher")
    try:
        job_id = hooked_job(console_stack)
        wait_for(lambda: console_stack.status(job_id).json()["status"] == "completed", "the job to complete",
                 timeout_s=120, every_s=0.3)
        polls = Polls.install(page)
        open_job(page, console_stack, job_id)
        expect(page.locator("#delivery-rows tr")).to_have_text(["No deliveries recorded."])
        expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
        follow_until_stopped(polls, statuses)
        assert len(deliveries_reads) <= len(statuses), deliveries_reads
        expect(resume).to_have_attribute("aria-pressed", "true")
        expect(note).to_contain_text("Updates paused after 30 minutes")
        with page.expect_response(STATUS):
            page.get_by_role("button", name="Refresh").click()  # reads once, and stays paused
        expect(page.locator("#delivery-rows tr")).to_have_text(["No deliveries recorded."])
        expect(resume).to_have_attribute("aria-pressed", "true")
        resume.click()  # follows them closely again, for 30 minutes more
        expect(note).to_be_empty()
        assert polls.replaced() == 2000
        follow_until_stopped(polls, statuses)
        expect(note).to_contain_text("Updates paused after 30 minutes")
    finally:
        stack.start("webhook-dispatcher")
    wait_for(lambda: [d["status"] for d in deliveries(console_stack, job_id)] == ["delivered"],
             "the delivery delivered", timeout_s=120, every_s=0.3)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#delivery-rows tr").first).to_contain_text("delivered")
    expect(resume).to_be_hidden()  # settled: nothing left to follow or resume, nor a note saying so
    expect(note).to_be_empty()


def test_reads_of_a_pending_delivery_come_every_2_s_again_once_it_changes_or_the_user_acts(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # The reads slow down only while nothing changes: a new attempt, or the user's Refresh or
    # Resume, is followed closely again. Staged: a delivery pending between retries.
    listed = {"job_id": finished_job.job_id, "deliveries": [pending_delivery(1)],
              "pagination": {"limit": 100, "offset": 0, "total": 1, "has_more": False}}
    page.route(DELIVERIES, lambda route: route.fulfill(json=listed))
    polls = Polls.install(page)
    open_job(page, console_stack, finished_job.job_id)
    expect(page.locator("#delivery-rows tr")).to_contain_text(["pending"])
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    assert [polls.run_next() for _ in range(6)] + [polls.next_delay()] == [
        2000, 4000, 8000, 16000, 32000, 60000, 60000]
    listed["deliveries"] = [pending_delivery(2)]
    assert polls.run_next() == 60000  # to the read that finds the second attempt
    expect(page.locator("#delivery-rows summary")).to_have_text("2 attempt(s)")
    assert [polls.run_next() for _ in range(3)] + [polls.next_delay()] == [2000, 4000, 8000, 16000]
    page.get_by_role("button", name="Refresh").click()
    assert polls.replaced() == 2000
    assert [polls.run_next() for _ in range(2)] + [polls.next_delay()] == [2000, 4000, 8000]
    page.get_by_role("button", name="Pause updates").click()
    page.get_by_role("button", name="Resume updates").click()
    assert polls.replaced() == 2000


def test_a_running_jobs_status_is_read_every_2_s_however_long_it_stays_unchanged(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # The slowing down is an ended job's: a running one is followed as closely as before.
    def running(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "status": "processing"})

    page.route(STATUS, running)
    polls = Polls.install(page)
    open_job(page, console_stack, finished_job.job_id)
    expect(page.locator("#job-summary .badge")).to_have_text("processing")
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    # The last delay is read once the last read has been answered (not cut off at the test's end).
    assert [polls.run_next() for _ in range(12)] + [polls.next_delay()] == [2000] * 13


def test_an_ended_jobs_webhooks_are_no_longer_read_after_30_minutes_of_failed_reads_either(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # The 30 minutes were checked only after a read that succeeded: a client at its polling limit
    # (429, the case the wait is for) had every open tab read on, once a minute, for hours.
    listed = {"job_id": finished_job.job_id, "deliveries": [pending_delivery(1)],
              "pagination": {"limit": 100, "offset": 0, "total": 1, "has_more": False}}
    page.route(DELIVERIES, lambda route: route.fulfill(json=listed))
    statuses = counted(page, STATUS)
    polls = Polls.install(page)
    open_job(page, console_stack, finished_job.job_id)
    expect(page.locator("#delivery-rows tr")).to_contain_text(["pending"])
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    limited = {"error": "Too Many Requests", "message": "Rate limit exceeded", "code": "RATE_LIMIT_EXCEEDED",
               "details": {}}
    page.route(STATUS, lambda route: route.fulfill(status=429, headers={"Retry-After": "60"}, json=limited))
    follow_until_stopped(polls, statuses)
    expect(page.get_by_role("button", name="Resume updates")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#action-result")).to_contain_text("Press Refresh or resume updates")


def test_a_redelivery_asked_for_right_after_a_cancel_is_asked_again_until_the_jobs_end_is_recorded(
        page: Page, console_stack: ConsoleStack) -> None:
    # The gateway answers 409 JOB_ENDING (Retry-After) while only its own record shows the job
    # ended; the page would have shown that as an error. Staged: the result-store is stopped, so
    # the cancel is not recorded in the read models until the page has been told to wait.
    stack, result = console_stack.stack, page.locator("#redeliver-result")
    stack.kill("result-store")
    try:
        job_id = hooked_job(console_stack)
        cancelled = httpx2.post(f"{stack.url}/api/v1/batch-jobs/{job_id}/cancel",
                                headers=console_stack.headers(job_id))
        assert cancelled.status_code == 200, cancelled.text
        open_job(page, console_stack, job_id)
        expect(page.locator("#job-summary .badge")).to_have_text("cancelled")
        page.get_by_role("button", name="Redeliver webhooks").click()
        expect(result).to_have_text("The job's end is still being recorded: asking again in 5 s.")
        expect(result).not_to_have_class("error")
    finally:
        stack.start("result-store")
    expect(result).to_have_text(re.compile("^Redelivery (scheduled|attempted)"), timeout=90_000)
