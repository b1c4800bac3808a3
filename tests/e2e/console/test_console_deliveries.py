"""A job's webhook deliveries on its page: which read is shown, and reads after the job ended. The
same stack as test_console.py (package fixtures); late answers are staged with Playwright's `route`."""

from __future__ import annotations

import re

import httpx2
import pytest
from playwright.sync_api import APIResponse, Page, Route, expect

from tests.conftest import new_id
from tests.e2e.console.conftest import ConsoleStack, FinishedJob, open_job, until_held, wait_until

pytestmark = pytest.mark.e2e
DELIVERIES = re.compile(r"/webhooks\?")


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
    wait_until(lambda: [d["status"] for d in deliveries(console_stack, job_id)] == ["delivered"], seconds=120)
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
    expect(rows.first).to_contain_text("delivered")
    # Every delivery has ended: the page stops reading, and has nothing left to pause.
    expect(page.get_by_role("button", name="Pause updates")).to_be_hidden()


def test_attempts_opened_while_a_delivery_is_pending_stay_open_and_focused_as_it_is_read_again(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # Read again at each poll while a delivery is pending, the table is rebuilt: the attempts a user
    # opened must not close every 2 s, nor the keyboard's place go back to the top of the page.
    # Staged: a delivery pending between retries.
    attempt = {"attempt": 1, "attempted_at": "2026-01-01T00:00:00Z", "succeeded": False,
               "status_code": 503, "latency_ms": 12.0, "error": None}
    pending = {"id": "pending-1", "webhook_url": "https://hooks.test/pending", "status": "pending",
               "attempt_count": 1, "attempts": [attempt], "last_attempt_at": attempt["attempted_at"],
               "error_message": "HTTP 503"}
    page.route(DELIVERIES, lambda route: route.fulfill(json={
        "job_id": finished_job.job_id, "deliveries": [pending],
        "pagination": {"limit": 100, "offset": 0, "total": 1, "has_more": False}}))
    open_job(page, console_stack, finished_job.job_id)
    details = page.locator("#delivery-rows details")
    details.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(details).to_have_attribute("open", "")
    for _ in range(2):  # once the second has been read, the first has been drawn
        with page.expect_request(DELIVERIES):
            pass
    expect(details.get_by_role("listitem")).to_contain_text("HTTP 503")
    assert details.get_attribute("open") == ""
    assert page.evaluate("document.activeElement.closest('details')?.dataset.delivery") == "pending-1"
