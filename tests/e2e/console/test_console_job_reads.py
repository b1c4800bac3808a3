"""How a job's page reads the API: lots a page at a time, polls that survive a failure, answers
for a page the user has left ignored. The same stack as test_console.py (package fixtures);
failures are staged with Playwright's `route`, the rest is the real API."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Route, expect
from sqlalchemy import delete, insert

from lotlens_common.tables import descriptions
from tests.conftest import new_id
from tests.e2e.console.conftest import (
    LOTS_OR_RESULTS,
    LOTS_PER_PAGE,
    WAITING_LOTS,
    ConsoleStack,
    FinishedJob,
    hold_once,
    is_show_more,
    open_job,
    sign_in,
    until_held,
)

pytestmark = pytest.mark.e2e


def test_lots_are_read_a_page_at_a_time_while_the_job_runs_never_as_the_whole_results(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # The page downloaded `batch-results` whole (a 50,000-lot, 10-language job: ~500 MB parsed in
    # the tab, a download place held all along) and showed no lot before the job finished.
    reads: list[str] = []
    page.on("request", lambda sent: reads.append(sent.url) if LOTS_OR_RESULTS.search(sent.url) else None)
    open_job(page, console_stack, waiting_job)
    expect(page.locator("#lots li.lot")).to_have_count(LOTS_PER_PAGE)
    expect(page.locator("#lots-note")).to_contain_text(f"{WAITING_LOTS} lots, {LOTS_PER_PAGE} shown.")
    page.get_by_role("button", name="Show more lots").click()
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)
    expect(page.get_by_role("button", name="Show more lots")).to_be_hidden()
    page.get_by_label("Only failed lots").check()
    expect(page.locator("#lots-note")).to_contain_text("0 failed lots, 0 shown.")
    expect(page.locator("#lots li.lot")).to_have_count(0)
    assert not [url for url in reads if "/batch-results/" in url], reads
    queries = [parse_qs(urlsplit(url).query) for url in reads]
    assert [(query["limit"], query["offset"], query.get("status")) for query in queries] == [
        ([str(LOTS_PER_PAGE)], ["0"], None), ([str(LOTS_PER_PAGE)], [str(LOTS_PER_PAGE)], None),
        ([str(LOTS_PER_PAGE)], ["0"], ["failed"])], reads


def test_a_failed_status_read_is_retried_and_its_message_cleared_once_a_read_succeeds(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # The catch returned before the next poll was scheduled: one 503 froze the page for good,
    # while it still offered "Pause updates".
    open_job(page, console_stack, waiting_job)
    expect(page.locator("#job-summary")).to_contain_text("pending")
    refused: list[str] = []

    def refuse_once(route: Route) -> None:
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(status=503, headers={"Retry-After": "1"}, json={
            "error": "Service unavailable", "message": "The database is unavailable",
            "code": "SERVICE_UNAVAILABLE"})

    page.route("**/api/v1/batch-status/**", refuse_once)
    result = page.locator("#action-result")
    expect(result).to_contain_text("The database is unavailable (SERVICE_UNAVAILABLE)")
    expect(result).to_have_class(re.compile(r"\berror\b"))
    expect(result).to_be_empty()  # the next poll read the status again
    expect(page.get_by_role("button", name="Pause updates")).to_be_visible()
    assert len(refused) == 1


def test_answers_for_a_page_the_user_left_change_nothing(
        page: Page, page_errors: list[str], console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # A failure answered after the user had left the job threw a TypeError (its message went to an
    # element no longer on the page), and a stale 401/403 signed the user out of the page now shown.
    held: dict[str, Route] = {}
    page.route(LOTS_OR_RESULTS, lambda route: held.setdefault("lots", route))
    page.route(re.compile(r"/webhooks\?"), lambda route: held.setdefault("deliveries", route))
    open_job(page, console_stack, finished_job.job_id)
    page.wait_for_function("() => document.querySelector('#job-summary dt')")
    page.get_by_role("link", name="All jobs").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    assert set(held) == {"lots", "deliveries"}
    held["lots"].fulfill(status=503, json={"error": "Busy", "message": "busy", "code": "DOWNLOADS_BUSY"})
    held["deliveries"].fulfill(status=403, json={"error": "Forbidden", "message": "no",
                                                 "code": "INVALID_SIGNATURE"})
    page.wait_for_timeout(500)  # what the answers would do is done by now
    expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")
    assert console_stack.stack.client_key in page.evaluate("JSON.stringify(sessionStorage)")
    assert [e for e in page_errors if not e.startswith("Failed to load resource")] == []


def test_a_malformed_job_address_says_not_found(
        page: Page, page_errors: list[str], console_stack: ConsoleStack) -> None:
    # `decodeURIComponent` threw a URIError on `%E0%A4%A`, and the previous page stayed on screen.
    sign_in(page, console_stack.stack)
    page.goto(f"{console_stack.stack.url}/console/#/jobs/%E0%A4%A")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.get_by_role("link", name="All jobs")).to_be_visible()
    assert [e for e in page_errors if not e.startswith("Failed to load resource")] == []


def test_a_job_that_does_not_exist_offers_no_action_on_it(page: Page, console_stack: ConsoleStack) -> None:
    # A mistyped job id (or another client's) said "Job … not found" beside enabled Cancel, Retry
    # and Redeliver buttons: Cancel asked to confirm cancelling the job, then failed.
    job_id = new_id("nojob")
    open_job(page, console_stack, job_id)
    expect(page.locator("#action-result")).to_have_text(f"Job {job_id} not found (JOB_NOT_FOUND)")
    for action in ("Cancel job", "Retry failed lots", "Redeliver webhooks"):
        expect(page.get_by_role("button", name=action)).to_be_disabled()


def test_past_a_page_of_deliveries_the_newest_are_shown(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # The list asked `?limit=500` of an oldest-first listing: a redelivery's rows, the newest,
    # never showed on a job with more deliveries than that. Staged: 600 deliveries.
    total = 600

    def listing(route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        limit, offset = int(query["limit"][0]), int(query.get("offset", ["0"])[0])
        rows: list[dict[str, object]] = [
            {"webhook_url": f"https://hooks.test/{n}", "status": "delivered", "attempt_count": 1,
             "attempts": [], "last_attempt_at": None, "error_message": None}
            for n in range(offset, min(total, offset + limit))]
        route.fulfill(json={"job_id": finished_job.job_id, "deliveries": rows, "pagination": {
            "limit": limit, "offset": offset, "total": total, "has_more": offset + len(rows) < total}})

    page.route(re.compile(r"/webhooks\?"), listing)
    open_job(page, console_stack, finished_job.job_id)
    rows = page.locator("#delivery-rows tr")
    expect(rows.first).to_have_text(f"The newest 100 of {total} deliveries.")
    expect(rows.last).to_contain_text(f"https://hooks.test/{total - 1}")
    expect(rows).to_have_count(101)


def test_a_failed_show_more_is_said_and_can_be_pressed_again(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # The button was hidden before the read and shown again only by a success: one failure hid
    # it for good, and the rest of the lots could not be read without leaving the page.
    held: list[Route] = []
    page.route(LOTS_OR_RESULTS, hold_once(held, is_show_more))
    open_job(page, console_stack, waiting_job)
    more = page.get_by_role("button", name="Show more lots")
    more.click()
    until_held(page, held).fulfill(status=503, json={"error": "Busy", "message": "busy",
                                                     "code": "DOWNLOADS_BUSY"})
    expect(page.locator("#lots-note")).to_contain_text("busy (DOWNLOADS_BUSY)")
    expect(more).to_be_visible()
    more.click()
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)
    expect(page.locator("#lots-note")).to_contain_text(f"{WAITING_LOTS} lots, {WAITING_LOTS} shown.")


def test_a_superseded_lots_read_that_fails_late_changes_nothing(
        page: Page, page_errors: list[str], console_stack: ConsoleStack, waiting_job: str) -> None:
    # Only a successful answer was checked against the newest read: a "Show more" failing after a
    # Refresh had read the list again wrote its error over the list's note, and a late 401/403
    # signed the user out although the newer read had been accepted.
    note, more = page.locator("#lots-note"), page.get_by_role("button", name="Show more lots")
    only_failed = page.get_by_label("Only failed lots")
    open_job(page, console_stack, waiting_job)
    for status, code in [(503, "DOWNLOADS_BUSY"), (403, "INVALID_SIGNATURE")]:
        only_failed.check()  # and back: the list read from its first page again
        only_failed.uncheck()
        expect(note).to_contain_text(f"{WAITING_LOTS} lots, {LOTS_PER_PAGE} shown.")
        held: list[Route] = []
        page.route(LOTS_OR_RESULTS, hold_once(held, is_show_more))
        more.click()
        late = until_held(page, held)
        page.get_by_role("button", name="Refresh").click()
        # The Refresh's re-read answers for the Show more it overtook: every lot shown.
        expect(note).to_contain_text(f"{WAITING_LOTS} lots, {WAITING_LOTS} shown.")
        late.fulfill(status=status, json={"error": "Refused", "message": "refused", "code": code})
        page.wait_for_timeout(1000)  # what the late answer would do is done by now
        expect(page.get_by_role("heading", level=1)).to_contain_text(waiting_job)
        shown = note.text_content() or ""
        assert shown.startswith(f"{WAITING_LOTS} lots, {WAITING_LOTS} shown."), (code, shown)
        assert not more.is_visible(), code  # every lot shown: the late failure offers no Show more
        page.unroute(LOTS_OR_RESULTS)
    assert console_stack.stack.client_key in page.evaluate("JSON.stringify(sessionStorage)")
    assert [e for e in page_errors if not e.startswith("Failed to load resource")] == []


def test_a_poll_answered_after_a_cancel_does_not_bring_the_running_job_back(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # Status answers had no read counter: a poll sent before Cancel and answered after it redrew
    # the job as pending, enabled Cancel again and read the lots again as a running job's.
    # (`waiting_job`: the batcher is down, so this job stays pending until it is cancelled.)
    images = console_stack.images
    job_id = console_stack.submit([{"lot_id": new_id("stale"), "additional_info": "Dent",  # 2: a batch
                                    "image_urls": [f"{images}/stale.png"]} for _ in range(2)], ["en"])
    before_cancel = console_stack.status(job_id).json()
    lots_reads: list[str] = []
    page.on("request", lambda sent: lots_reads.append(sent.url) if LOTS_OR_RESULTS.search(sent.url) else None)
    open_job(page, console_stack, job_id)
    expect(page.locator("#job-summary")).to_contain_text("pending")
    held: list[Route] = []
    page.route("**/api/v1/batch-status/**", hold_once(held, lambda route: True))
    late_poll = until_held(page, held)
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-announcer")).to_have_text("Job cancelled: 0 of 2 lots described, 0 failed.")
    expect(page.locator("#lots-note")).to_have_text("2 lots, 2 shown.")  # read again as a finished job's
    reads_after_cancel = len(lots_reads)
    late_poll.fulfill(json=before_cancel)
    page.wait_for_timeout(1000)  # what the late answer would do is done by now (the next poll is 2 s off)
    assert page.locator("#job-summary .badge").text_content() == "cancelled"
    assert page.get_by_role("button", name="Cancel job").is_disabled()
    assert len(lots_reads) == reads_after_cancel, lots_reads


def test_a_refresh_whose_status_read_fails_reads_the_lots_once_a_read_succeeds(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # Refresh asked for the lists along with its status read; when that read failed, the one that
    # succeeded later (a poll, or "Resume updates") did not, as the status had not changed.
    open_job(page, console_stack, waiting_job)
    expect(page.locator("#lots li.lot")).to_have_count(LOTS_PER_PAGE)
    page.get_by_role("button", name="Pause updates").click()  # no poll: the failed read is Refresh's
    refused: list[Route] = []
    page.route("**/api/v1/batch-status/**", hold_once(refused, lambda route: True))
    page.get_by_role("button", name="Refresh").click()
    until_held(page, refused).fulfill(status=503, json={
        "error": "Service unavailable", "message": "down", "code": "SERVICE_UNAVAILABLE"})
    expect(page.locator("#action-result")).to_contain_text("Could not read the job's status")
    with page.expect_request(LOTS_OR_RESULTS, timeout=10_000):
        page.get_by_role("button", name="Resume updates").click()
    expect(page.locator("#action-result")).to_be_empty()


def test_a_failed_lot_shows_the_texts_it_kept_under_their_own_line(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # The API lists them in `partial_descriptions` (a failed lot's `descriptions` stay empty): a
    # page reading `descriptions` alone showed none of the English a lot failed at translation kept.
    failed = finished_job.lot_ids[2]
    row = {"job_id": finished_job.job_id, "lot_id": failed, "language": "en", "damages": "<p>Kept dent.</p>"}
    with console_stack.engine.begin() as conn:
        conn.execute(insert(descriptions).values(**row))
    try:
        open_job(page, console_stack, finished_job.job_id)
        heading = page.get_by_role("heading", name=re.compile(re.escape(failed)))
        shown = page.locator("li.lot").filter(has=heading)
        expect(shown.locator(".partial")).to_have_text("Kept though the lot failed:")
        expect(shown.locator(".damages[lang=en]")).to_have_text("Kept dent.")
        expect(shown).to_contain_text("Not described in: de.")
    finally:
        with console_stack.engine.begin() as conn:
            conn.execute(delete(descriptions).where(descriptions.c.job_id == finished_job.job_id,
                                                    descriptions.c.lot_id == failed))
