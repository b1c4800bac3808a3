"""A job's page updating itself: what lifting the 30-minute pause leaves on screen, what Redeliver and
Refresh send while it holds, and a tab in the background. The same stack as test_console.py (package
fixtures); pending deliveries are staged with Playwright's `route`, time runs on its fake clock."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.console.conftest import ConsoleStack, FinishedJob, open_job
from tests.e2e.console.polls import DELIVERIES, STATUS, Polls, counted, follow_until_stopped, pending_delivery

pytestmark = pytest.mark.e2e
PAUSED = "Updates paused after 30 minutes"
# A tab in the background as the browser says it: `visibilityState` (and `hidden`) read "hidden", then
# `visibilitychange`; shown again, the document's own (visible) values come back.
HIDE = """() => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  delete document.visibilityState;
  delete document.hidden;
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def staged_pending(page: Page, job_id: str) -> dict[str, Any]:
    """The job's deliveries answered as one delivery pending between retries (the test may change
    the answer); the page waits for its webhooks, and pauses after 30 minutes."""
    listed = {"job_id": job_id, "deliveries": [pending_delivery(1)],
              "pagination": {"limit": 100, "offset": 0, "total": 1, "has_more": False}}
    page.route(DELIVERIES, lambda route: route.fulfill(json=listed))
    return listed


def paused_by_the_wait(page: Page, console: ConsoleStack, job_id: str) -> Polls:
    """The job's page open on the fake clock, run until its wait for the webhooks paused it."""
    statuses = counted(page, STATUS)
    polls = Polls.install(page)
    open_job(page, console, job_id)
    expect(page.locator("#delivery-rows tr")).to_contain_text(["pending"])
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    follow_until_stopped(polls, statuses)
    expect(page.locator("#action-result")).to_contain_text(PAUSED)
    return polls


def test_lifting_the_30_minute_pause_leaves_a_retry_result_written_before_it(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # Resume, or a read finding the webhooks settled, emptied the action line: the result of
    # "Retry failed lots" written just before went with it, and the new job's id with the result.
    staged_pending(page, finished_job.job_id)
    polls = paused_by_the_wait(page, console_stack, finished_job.job_id)
    result, retried = page.locator("#action-result"), re.compile(r"^Failed lots resubmitted as job \S+\.$")
    page.get_by_role("button", name="Retry failed lots").click()
    expect(result).to_have_text(retried)
    page.get_by_role("button", name="Resume updates").click()
    assert polls.replaced() == 2000  # lifted: read again in 2 s
    expect(result).to_have_text(retried)
    follow_until_stopped(polls, counted(page, STATUS))
    expect(result).to_contain_text(PAUSED)
    # The webhooks have settled meanwhile (the real, delivered ones): the read after the retry finds
    # them so, and lifts the pause.
    page.unroute(DELIVERIES)
    page.get_by_role("button", name="Retry failed lots").click()
    expect(page.get_by_role("button", name="Resume updates")).to_be_hidden()
    expect(result).to_have_text(retried)
    expect(result.get_by_role("link")).to_be_visible()


def test_redeliver_during_the_30_minute_pause_follows_the_webhooks_again(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    listed = staged_pending(page, finished_job.job_id)
    polls = paused_by_the_wait(page, console_stack, finished_job.job_id)
    statuses, reads = counted(page, STATUS), counted(page, DELIVERIES)
    redelivered = dict(pending_delivery(1), id="redelivered-1", status="delivered", error_message=None)

    def scheduled(route: Route) -> None:
        """Accept the redelivery as the gateway does, and list its row from then on (the first stays
        pending). Staged: a real one holds the job's 10-minute limit against test_console.py's."""
        listed["deliveries"] = [pending_delivery(1), redelivered]
        listed["pagination"]["total"] = 2
        route.fulfill(status=202, json={"job_id": finished_job.job_id, "redelivery_id": "redelivery-1",
                                        "status": "scheduled", "requested_at": "2026-01-01T00:10:00Z"})

    page.route("**/webhooks/redeliver", scheduled)
    with page.expect_response(DELIVERIES):
        page.get_by_role("button", name="Redeliver webhooks").click()
    expect(page.locator("#redeliver-result")).to_have_text("Redelivery attempted: see the newest row.")
    expect(page.locator("#delivery-rows tr")).to_have_count(2)
    expect(page.get_by_role("button", name="Pause updates")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#action-result")).to_be_empty()  # the pause it lifted is not said any more
    assert (len(statuses), len(reads)) == (1, 1)
    # Followed closely again: read in 2 s, then 4 s, as a wait that has just begun.
    assert [polls.run_next(), polls.next_delay()] == [2000, 4000]
    assert (len(statuses), len(reads)) == (2, 2)


def test_refresh_during_the_30_minute_pause_reads_once_and_stays_paused(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # Tested by the Resume button's state only; this counts what is sent, and reads what is shown,
    # the pause reached through failed reads too (a client at its polling limit).
    staged_pending(page, finished_job.job_id)
    statuses = counted(page, STATUS)
    polls = Polls.install(page)
    open_job(page, console_stack, finished_job.job_id)
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    limited = {"error": "Too Many Requests", "message": "Rate limit exceeded", "code": "RATE_LIMIT_EXCEEDED",
               "details": {}}
    page.route(STATUS, lambda route: route.fulfill(status=429, headers={"Retry-After": "60"}, json=limited))
    follow_until_stopped(polls, statuses)
    note = page.locator("#action-result")
    expect(note).to_contain_text("Press Refresh or resume updates")
    page.unroute(STATUS)
    sent = counted(page, re.compile(r"/api/v1/"))
    with page.expect_response(DELIVERIES):
        page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#job-summary .badge")).to_have_text("completed")
    # Still paused, and the page says so: the note on the failed reads went, and the pause's came back.
    expect(note).to_contain_text(PAUSED)
    expect(page.get_by_role("button", name="Resume updates")).to_have_attribute("aria-pressed", "true")
    assert polls.replaced() is None  # no read is set up
    page.clock.run_for(60 * 60_000)
    page.wait_for_timeout(500)  # a read the hour set off would have been sent by now
    job = f"/api/v1/batch-jobs/{finished_job.job_id}"
    assert sorted(urlsplit(url).path for url in sent) == [
        f"{job}/lots", f"{job}/webhooks", f"/api/v1/batch-status/{finished_job.job_id}"]


def test_a_tab_in_the_background_reads_nothing_and_reads_at_once_when_shown(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # A hidden tab read its running job every 2 s for as long as it stayed open.
    def running(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "status": "processing"})

    page.route(STATUS, running)
    statuses = counted(page, STATUS)
    polls = Polls.install(page)
    open_job(page, console_stack, finished_job.job_id)
    expect(page.locator("#job-summary .badge")).to_have_text("processing")
    assert polls.next_delay() == 2000
    page.evaluate(HIDE)
    statuses.clear()
    for _ in range(5):  # ten seconds of the page's clock, each read it sends given time to be answered
        page.clock.run_for(2000)
        page.wait_for_timeout(300)
    assert statuses == []
    with page.expect_request(STATUS):
        page.evaluate(SHOW)  # shown again: read at once, not at the next poll
    assert len(statuses) == 1
    assert polls.replaced() == 2000  # and every 2 s from then on
