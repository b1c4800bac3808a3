"""Show more and the lots read again on a job's page, while lots keep failing under the reading
and the status answers late. The same stack as test_console.py (package fixtures); the failed lots
are staged with Playwright's `route`, the rest is the real API."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.console.conftest import (
    LOTS_OR_RESULTS,
    LOTS_PER_PAGE,
    WAITING_LOTS,
    ConsoleStack,
    hold_once,
    is_show_more,
    on_page,
    open_job,
    staged_failed_lots,
    until_held,
)

pytestmark = pytest.mark.e2e


def test_show_more_lists_each_failed_lot_once_when_one_fails_before_the_page_read(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # "Show more" read the next offset of a list that had grown meanwhile: a lot failing before
    # that offset moved the page back by one, so lot 50 showed twice and the new one never, under
    # "61 failed lots, 61 shown" (60 distinct). Staged: lot 10 fails between the two reads.
    lot_ids = [f"{waiting_job}-{n:02}" for n in range(WAITING_LOTS + 1)]
    failed = [lot_id for lot_id in lot_ids if lot_id != lot_ids[10]]

    page.route(LOTS_OR_RESULTS, staged_failed_lots(waiting_job, failed))
    open_job(page, console_stack, waiting_job)
    page.get_by_label("Only failed lots").check()
    expect(page.locator("#lots-note")).to_contain_text(f"{WAITING_LOTS} failed lots, {LOTS_PER_PAGE} shown.")
    # Only "Show more" reads from here: a poll that re-read the first page after the click (a read
    # owed since one failed on a loaded machine) answered for the list instead, and 50 were shown.
    page.get_by_role("button", name="Pause updates").click()
    failed.insert(10, lot_ids[10])
    page.get_by_role("button", name="Show more lots").click()
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids)
    expect(page.locator("#lots-note")).to_contain_text(f"{len(lot_ids)} failed lots, {len(lot_ids)} shown.")
    expect(page.get_by_role("button", name="Show more lots")).to_be_hidden()


def test_show_more_reaches_past_500_failed_lots_and_never_shows_fewer_while_lots_keep_failing(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # A list changed since its first page was read again in one read of the lots shown and a page
    # more, at most 500: with lots failing between clicks, every click from 450 shown on read the
    # same first 500, and the lots past them were never reached while the job ran. Staged: 549
    # failed lots of 560, one more failing before each click.
    lot_ids = [f"{waiting_job}-{n:03}" for n in range(560)]
    late = lot_ids[5::51]  # as many as the clicks that show them all
    failed = [lot_id for lot_id in lot_ids if lot_id not in late]
    page.route(LOTS_OR_RESULTS, staged_failed_lots(waiting_job, failed))
    note, more = page.locator("#lots-note"), page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    page.get_by_label("Only failed lots").check()
    expect(note).to_contain_text(f"{len(failed)} failed lots, {LOTS_PER_PAGE} shown.")
    shown = LOTS_PER_PAGE
    for lot_id in late:
        failed.append(lot_id)
        failed.sort()  # the lots' order in the job (the ids are zero-padded)
        more.click()
        shown = min(len(failed), shown + LOTS_PER_PAGE)
        expect(note).to_contain_text(f"{len(failed)} failed lots, {shown} shown.")
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids)
    expect(more).to_be_hidden()


def test_show_more_after_a_change_shows_no_fewer_lots_when_the_byte_cap_cuts_a_page_short(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # The lots shown and a page more were read again as one read, which the gateway's byte cap
    # (`lots_page_max_bytes`, 1 MiB: a few dozen lots of many languages) cut short: its next_offset
    # went unread and the list shrank to what that answer held. Staged: at most 30 lots an answer.
    lot_ids = [f"{waiting_job}-{n:03}" for n in range(120)]
    failed = [lot_id for lot_id in lot_ids if lot_id != lot_ids[10]]
    page.route(LOTS_OR_RESULTS, staged_failed_lots(waiting_job, failed, most=30))
    note, more = page.locator("#lots-note"), page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    page.get_by_label("Only failed lots").check()
    expect(note).to_contain_text(f"{len(failed)} failed lots, 30 shown.")
    more.click()
    expect(note).to_contain_text(f"{len(failed)} failed lots, 60 shown.")
    failed.insert(10, lot_ids[10])
    more.click()
    expect(note).to_contain_text(f"{len(failed)} failed lots, {60 + LOTS_PER_PAGE} shown.")
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids[:60 + LOTS_PER_PAGE])
    expect(more).to_be_visible()


def failing_while_read_again(waiting_job: str, failed: list[str],
                             failing: list[str]) -> Callable[[Route], None]:
    """`staged_failed_lots` (at most 30 lots an answer), where the next lot of `failing` (filled
    by the test before its click) fails each time the first page is read, once it is answered."""
    staged = staged_failed_lots(waiting_job, failed, most=30)

    def answer(route: Route) -> None:
        staged(route)
        query = parse_qs(urlsplit(route.request.url).query)
        if query.get("status") == ["failed"] and query["offset"] == ["0"] and failing:
            failed.append(failing.pop(0))
            failed.sort()  # the lots' order in the job (the ids are zero-padded)
    return answer


def test_a_lot_failing_while_the_list_is_read_again_is_never_left_out_of_the_lots_shown(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # The list changed since its first page was read again page by page; a lot failing before the
    # page being read moved the rest on by one: lot 5 was never shown, under "120 failed lots, 80
    # shown.", and nothing said so (the next click found it). Staged: lot 10 fails before the
    # click, lot 5 once the first page has been read again.
    lot_ids = [f"{waiting_job}-{n:03}" for n in range(120)]
    failed = [lot_id for lot_id in lot_ids if lot_id not in (lot_ids[5], lot_ids[10])]
    failing: list[str] = []
    page.route(LOTS_OR_RESULTS, failing_while_read_again(waiting_job, failed, failing))
    note, more = page.locator("#lots-note"), page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    page.get_by_label("Only failed lots").check()
    expect(note).to_contain_text(f"{len(failed)} failed lots, 30 shown.")
    failed.insert(9, lot_ids[10])
    failing.append(lot_ids[5])
    more.click()
    expect(page.locator("#lots li.lot")).to_have_count(30 + LOTS_PER_PAGE)
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids[:30 + LOTS_PER_PAGE])
    expect(note).to_contain_text(f"{len(lot_ids)} failed lots, {30 + LOTS_PER_PAGE} shown. The job is")
    expect(more).to_be_visible()


def test_a_list_still_moving_after_three_reads_says_it_may_lack_a_lot_until_read_again(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # Read again while lots keep failing before the page being read, the lots shown lacked the last
    # one to fail, and the note said only "118 failed lots, 80 shown.". Staged: lot 4 fails before
    # the click, lots 3, 2 and 1 at each read of the first page again; then none.
    lot_ids = [f"{waiting_job}-{n:03}" for n in range(120)]
    failed, failing = lot_ids[:1] + lot_ids[5:], list[str]()
    page.route(LOTS_OR_RESULTS, failing_while_read_again(waiting_job, failed, failing))
    note, more = page.locator("#lots-note"), page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    page.get_by_label("Only failed lots").check()
    expect(note).to_contain_text(f"{len(failed)} failed lots, 30 shown.")
    failed.insert(1, lot_ids[4])
    failing.extend(lot_ids[3:0:-1])
    more.click()
    expect(note).to_contain_text(f"{len(lot_ids)} failed lots, {30 + LOTS_PER_PAGE} shown. The list changed "
                                 "while it was read and may lack a lot: Show more lots reads it again.")
    assert lot_ids[1] not in page.locator("#lots li.lot h3 code").all_inner_texts()
    more.click()
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids)
    expect(note).to_contain_text(f"{len(lot_ids)} failed lots, {len(lot_ids)} shown. The job is running")
    expect(more).to_be_hidden()


def held_then_counted(waiting_job: str, held: list[Route], later: list[str]) -> Callable[[Route], None]:
    """A `route` handler for the job's status reads: the first one held (the test answers it), the
    later ones noted in `later` and passed on."""
    def handle(route: Route) -> None:
        if waiting_job not in route.request.url:
            route.continue_()
        elif not held:
            held.append(route)
        else:
            later.append(route.request.url)
            route.continue_()
    return handle


def test_a_first_status_answered_after_show_more_keeps_the_lots_the_user_read(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # The page read its lots again from the first page once its first status read answered: a
    # user who had filtered and pressed Show more before it (a slow server) saw 60 lots go back to
    # 30. Staged: the first status read held until then, at most 30 lots an answer.
    lot_ids = [f"{waiting_job}-{n:03}" for n in range(120)]
    held: list[Route] = []
    polls: list[str] = []
    firsts: list[str] = []
    page.route("**/api/v1/batch-status/**", held_then_counted(waiting_job, held, polls))
    staged = staged_failed_lots(waiting_job, lot_ids, most=30)

    def lots(route: Route) -> None:
        if parse_qs(urlsplit(route.request.url).query).get("offset") == ["0"]:
            firsts.append(route.request.url)
        staged(route)

    page.route(LOTS_OR_RESULTS, lots)
    note, more = page.locator("#lots-note"), page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    status = until_held(page, held)
    page.get_by_label("Only failed lots").check()
    more.click()
    expect(note).to_contain_text(f"{len(lot_ids)} failed lots, 60 shown.")
    read_before = len(firsts)
    status.continue_()
    expect(page.locator("#job-summary")).to_contain_text("pending")
    on_page(page, lambda: polls, "the next status poll")  # 2 s on: a read it began has gone out
    assert firsts[read_before:] == [], "the lots were read again from the first page"
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids[:60])
    expect(note).to_contain_text("60 shown. The job is running")


def marking(failing: list[str]) -> Callable[[Route], None]:
    """A `route` handler passing the lots reads on, with the lots in `failing` answered failed
    ("Marked failed"), to know when lots read again are shown."""
    def handle(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        for lot in body["lots"]:
            if lot["lot_id"] in failing:
                lot.update(status="failed", error_message="Marked failed")
        route.fulfill(response=answer, json=body)
    return handle


def test_lots_read_again_on_refresh_keep_as_many_shown(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # Lots read again on Refresh were read from the first page: a user who had shown every lot
    # saw 50 again under a Show more to press.
    failing: list[str] = []
    page.route(LOTS_OR_RESULTS, marking(failing))
    more = page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    more.click()
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)
    lot_ids = page.locator("#lots li.lot h3 code").all_inner_texts()
    failing.append(lot_ids[0])
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#lots li.lot").first).to_contain_text("Marked failed")
    expect(page.locator("#lots li.lot h3 code")).to_have_text(lot_ids)
    expect(page.locator("#lots-note")).to_contain_text(f"{WAITING_LOTS} lots, {WAITING_LOTS} shown.")
    expect(more).to_be_hidden()


def test_a_change_of_status_read_while_show_more_was_pressed_reads_every_lot_shown_again(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # A Show more pressed while a status poll was on its way passed for lots read afresh: the
    # status's change read none again, and the first 50 stayed as they were before it (a finished
    # job's lots shown running, for good). Staged: the poll held over the click, then answered
    # `processing`, with lot 0 failed from then on.
    held: list[Route] = []
    failing: list[str] = []
    page.route(LOTS_OR_RESULTS, marking(failing))
    more = page.get_by_role("button", name="Show more lots")
    open_job(page, console_stack, waiting_job)
    expect(page.locator("#lots li.lot")).to_have_count(LOTS_PER_PAGE)
    lot_ids = page.locator("#lots li.lot h3 code").all_inner_texts()

    def processing(route: Route) -> None:  # every status read from here on, the first one held
        if waiting_job in route.request.url and not held:
            held.append(route)
            return
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "status": "processing"})

    page.route("**/api/v1/batch-status/**", processing)
    poll = until_held(page, held)
    more.click()
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)
    failing.append(lot_ids[0])
    answer = poll.fetch()
    poll.fulfill(response=answer, json={**answer.json(), "status": "processing"})
    expect(page.locator("#job-summary")).to_contain_text("processing")
    expect(page.locator("#lots li.lot").first).to_contain_text("Marked failed")
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)  # as many as shown, read again


def test_a_show_more_overtaken_by_a_change_of_status_is_answered_by_the_lots_read_again(
        page: Page, console_stack: ConsoleStack, waiting_job: str) -> None:
    # A change of status read while a Show more was on its way dropped the Show more: the lots
    # read again were as many as before the click (50 of 60, the button to press again), and the
    # keyboard, on the button when it was pressed, was left on the page's body (found by review).
    # Staged: the Show more's read held; the status answered `processing` from then on.
    held: list[Route] = []
    changed: list[str] = []
    more = page.get_by_role("button", name="Show more lots")

    def processing(route: Route) -> None:
        if not changed or waiting_job not in route.request.url:
            route.continue_()
            return
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "status": "processing"})

    page.route(LOTS_OR_RESULTS, hold_once(held, is_show_more))
    page.route("**/api/v1/batch-status/**", processing)
    open_job(page, console_stack, waiting_job)
    expect(page.locator("#lots li.lot")).to_have_count(LOTS_PER_PAGE)
    more.focus()
    page.keyboard.press("Enter")
    show_more = until_held(page, held)
    changed.append("processing")
    expect(page.locator("#job-summary")).to_contain_text("processing")
    expect(page.locator("#lots li.lot")).to_have_count(WAITING_LOTS)
    show_more.continue_()  # answered after the re-read: changes nothing
    expect(page.locator("#lots li.lot").nth(LOTS_PER_PAGE).locator("h3")).to_be_focused()
    expect(more).to_be_hidden()
