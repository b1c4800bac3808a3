"""The web console in a real browser (Debian's Chromium via Playwright) against the whole stack."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import Locator, Page, Route, expect
from sqlalchemy import select, update

from lotlens_common.tables import descriptions
from tests.conftest import new_id
from tests.e2e.console.conftest import ConsoleStack, FinishedJob, screenshot, sign_in
from tests.polling import wait_for
from tests.standin import description

pytestmark = pytest.mark.e2e
A11Y_CHECK = (Path(__file__).with_name("a11y_check.js")).read_text()
HOSTILE = ('<p>Scratched <script>window.hostile = "script"</script>'
           '<img src="x" onerror="window.hostile = \'img\'"><b onclick="window.hostile = 1">hood</b></p>'
           '<a href="javascript:alert(1)">link text</a><ul><li>dent</li></ul>')


def open_job(page: Page, console: ConsoleStack, job_id: str) -> None:
    sign_in(page, console.stack)
    page.get_by_role("link", name=job_id).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(job_id)


def lot(page: Page, lot_id: str) -> Locator:
    return page.locator("li.lot").filter(has=page.get_by_role("heading", name=re.compile(re.escape(lot_id))))


def test_signing_in_lists_the_job_with_its_progress_and_keeps_the_key_in_the_tab(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob, tmp_path: Path) -> None:
    stack = console_stack.stack
    page.goto(f"{stack.url}/console/")
    # The server knows a client by its key alone: a typed client id, never checked, was shown in
    # the nav as the signed-in client (another customer's name, to support staff).
    expect(page.get_by_label("Client id")).to_have_count(0)
    key = page.get_by_label("Shared key")
    # Chrome offered to save (and sync) a `current-password` field; the page says the key stays here.
    expect(key).to_have_attribute("autocomplete", "off")
    key.fill("not-the-key")
    screenshot(page, "login", tmp_path)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The server accepts no client with this key.")

    sign_in(page, stack)
    expect(page.get_by_role("navigation")).to_contain_text("Signed in")
    expect(page.get_by_role("navigation")).not_to_contain_text(stack.client_id)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=finished_job.job_id))
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("2 of 3 lots described, 1 failed (100%)")
    expect(row.get_by_role("progressbar")).to_have_attribute("value", "100")
    screenshot(page, "jobs", tmp_path)
    assert page.evaluate("Object.keys(localStorage).length") == 0
    assert stack.client_key in page.evaluate("JSON.stringify(sessionStorage)")
    assert page.context.cookies() == []

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name=finished_job.job_id)).to_have_count(0)
    page.get_by_label("Status").select_option("completed")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()


def test_the_job_page_shows_lots_descriptions_missing_images_failures_and_deliveries(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob, tmp_path: Path) -> None:
    described, partial, failed = finished_job.lot_ids
    open_job(page, console_stack, finished_job.job_id)
    expect(page.locator("#job-summary")).to_contain_text("completed")
    first = lot(page, described)
    # The stand-in's description: its first paragraph names the images and notes, a list follows.
    english = "Standin vision: 1 image(s) reviewed. Dented left door"
    expect(first.locator(".damages[lang=en] p").first).to_have_text(english)
    expect(first.locator(".damages[lang=de] p").first).to_have_text(f"[de] {english}")
    items = description(1, "Dented left door").count("<li>")
    expect(first.locator(".damages[lang=en] li")).to_have_count(items)
    expect(first.locator(".damages[lang=de] li")).to_have_count(items)
    expect(lot(page, partial)).to_contain_text(finished_job.missing_url)
    expect(lot(page, failed)).to_contain_text("failed")
    expect(lot(page, failed).locator(".reason")).to_contain_text("Reason:")
    expect(lot(page, failed)).to_contain_text("Not described in: en, de.")
    usage = console_stack.status(finished_job.job_id).json()["processing_details"]["usage"]
    totals = page.get_by_role("row", name=re.compile("^All models"))
    expect(totals).to_contain_text(f"{usage['input_tokens']:,}")
    expect(totals).to_contain_text(f"{usage['output_tokens']:,}")
    for model in usage["by_model"]:
        expect(page.get_by_role("row", name=re.compile(f"^{re.escape(model)}"))).to_be_visible()
    expect(first).to_contain_text("Tokens: ")
    page.get_by_label("Only failed lots").check()
    expect(page.locator("li.lot")).to_have_count(1)
    page.get_by_label("Only failed lots").uncheck()
    delivered = page.locator("#delivery-rows tr").first
    expect(delivered).to_contain_text(f"{console_stack.receiver.url}/hooks")
    expect(delivered).to_contain_text("delivered")
    screenshot(page, "job", tmp_path)


def test_a_hostile_description_is_rebuilt_from_the_allowlist_and_never_runs(
        page: Page, page_errors: list[str], console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # Descriptions are sanitised when stored; the console holds on its own even for a row that is
    # not (stored before that, or past a sanitiser's bug): the markup goes straight into the table.
    partial = finished_job.lot_ids[1]
    row = (descriptions.c.job_id == finished_job.job_id, descriptions.c.lot_id == partial,
           descriptions.c.language == "de")
    with console_stack.engine.begin() as conn:
        original = conn.execute(select(descriptions.c.damages).where(*row)).scalar_one()
        conn.execute(update(descriptions).where(*row).values(damages=HOSTILE))
    try:
        open_job(page, console_stack, finished_job.job_id)
        shown = lot(page, partial).locator(".damages[lang=de]")
        expect(shown).to_have_text("Scratched hoodlink textdent")
        expect(shown.locator("b")).to_have_text("hood")
        expect(shown.locator("li")).to_have_text("dent")
        assert shown.locator("script, img, a, [onclick], [onerror], [href]").count() == 0
        page.wait_for_timeout(500)  # an image error handler would have fired by now
        assert page.evaluate("window.hostile") is None
    finally:
        with console_stack.engine.begin() as conn:
            conn.execute(update(descriptions).where(*row).values(damages=original))
    # Chromium checks the policy as the inert parser meets the handlers and reports each one;
    # nothing else may have gone wrong.
    # (The first page a browser loads also asks for /favicon.ico, a 404 the fixture expects too.)
    assert all("Content Security Policy" in error or error.startswith("Failed to load resource")
               for error in page_errors), page_errors
    page_errors.clear()


def test_redeliver_adds_a_delivery_that_is_attempted(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob, tmp_path: Path) -> None:
    before = len(console_stack.receiver.received)
    open_job(page, console_stack, finished_job.job_id)
    rows = page.locator("#delivery-rows tr")
    expect(rows.first).to_contain_text("delivered")
    count = rows.count()
    page.get_by_role("button", name="Redeliver webhooks").click()
    expect(page.locator("#redeliver-result")).to_have_text("Redelivery attempted: see the newest row.")
    expect(rows).to_have_count(count + 1)
    expect(rows.last).to_contain_text("delivered")
    rows.last.get_by_text("1 attempt(s)").click()
    expect(rows.last.locator("details li")).to_contain_text("HTTP 200")
    assert len(console_stack.receiver.received) > before
    screenshot(page, "deliveries", tmp_path, selector="#deliveries-section")


def test_cancel_stops_a_running_job(page: Page, console_stack: ConsoleStack) -> None:
    stack = console_stack.stack
    stack.kill("vision-batcher")  # the job stays pending until it is cancelled
    try:
        images = console_stack.images
        job_id = console_stack.submit([{"lot_id": new_id("c"), "additional_info": "x",
                                        "image_urls": [f"{images}/c{i}.png"]} for i in range(2)], ["en"])
        open_job(page, console_stack, job_id)
        expect(page.get_by_role("button", name="Retry failed lots")).to_be_disabled()
        # The live regions are there before their first message (display:none kept them out of
        # the accessibility tree until then, and screen readers often missed that message).
        expect(page.get_by_role("status")).to_have_count(4)
        # Offered once the job's status is read (0019f44): focused before, Enter did nothing.
        expect(page.get_by_role("button", name="Cancel job")).to_be_enabled()
        page.get_by_role("button", name="Cancel job").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#action-result")).to_have_text("Job cancelled.")
        # WCAG 2.4.3: the disabled button dropped the focus to the top of the page; it goes to the result.
        expect(page.locator("#action-result")).to_be_focused()
        # The change of status is said once, in words, not only redrawn in the summary.
        expect(page.locator("#job-announcer")).to_have_text(
            "Job cancelled: 0 of 2 lots described, 0 failed.")
        expect(page.locator("#job-summary")).to_contain_text("cancelled")
        expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
        assert console_stack.status(job_id).json()["status"] == "cancelled"
    finally:
        stack.start("vision-batcher")


def answered_404(body: dict[str, str]) -> Callable[[Route], None]:
    """A `route` handler answering 404 with `body` (one parameter: Playwright passes the request
    too to a handler that takes two)."""
    return lambda route: route.fulfill(status=404, json=body)


def test_retry_failed_shows_the_new_job_and_says_cannot_yet_only_for_a_missing_endpoint(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    open_job(page, console_stack, finished_job.job_id)
    result = page.locator("#action-result")
    retry = page.get_by_role("button", name="Retry failed lots")
    # Every 404 read "cannot retry yet", the job's own JOB_NOT_FOUND too; only a route the server
    # lacks (NOT_FOUND) means an older server.
    job_missing = {"error": "Not found", "message": f"Job {finished_job.job_id} not found",
                   "code": "JOB_NOT_FOUND"}
    route_missing = {"error": "Not found", "message": "Not Found", "code": "NOT_FOUND"}
    for answer, shown in [(job_missing, f"Job {finished_job.job_id} not found (JOB_NOT_FOUND)"),
                          (route_missing, "This server cannot retry failed lots yet.")]:
        page.route("**/retry-failed", answered_404(answer))
        retry.click()
        expect(result).to_have_text(shown)
        page.unroute("**/retry-failed")
    # A 409 IDEMPOTENCY_KEY_IN_PROGRESS (another call is making the retry) was shown as an error:
    # it is asked again after its Retry-After, and the job that call makes is shown.
    asked: list[str] = []

    def in_progress_once(route: Route) -> None:
        asked.append(route.request.url)
        if len(asked) > 1:
            route.continue_()
            return
        route.fulfill(status=409, headers={"Retry-After": "1"}, json={
            "error": "Conflict", "message": "The retry of this job is being made",
            "code": "IDEMPOTENCY_KEY_IN_PROGRESS"})

    page.route("**/retry-failed", in_progress_once)
    retry.click()
    expect(result.get_by_role("link")).to_be_visible()
    assert len(asked) == 2, asked
    # Retrying is idempotent: asking the API again names the job the console was given (asked
    # once the console has its answer: two calls at once, one is told 409 in progress).
    direct = httpx2.post(f"{console_stack.stack.url}/api/v1/batch-jobs/{finished_job.job_id}/retry-failed",
                         headers=console_stack.headers(finished_job.job_id))
    assert direct.is_success, direct.text
    retry_job = direct.json()["job_id"]
    expect(result.get_by_role("link")).to_have_text(retry_job)
    # The summary's "Retried as" link showed only after Refresh (the job had ended: no poll read it).
    expect(page.locator("#job-summary").get_by_role("link", name=retry_job)).to_be_visible()


def focus_until(page: Page, selector: str, presses: int = 40) -> list[str]:
    """Press Tab until `selector` has the focus; the focused elements on the way, each with a
    visible outline."""
    seen = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate("""() => { const e = document.activeElement, s = getComputedStyle(e);
            return [e.id || e.textContent.trim(), s.outlineStyle !== 'none' && s.outlineWidth !== '0px'] }""")
        assert focused[1], f"no visible focus on {focused[0]}"
        seen.append(focused[0])
        if page.evaluate(f"document.activeElement.matches({selector!r})"):
            return seen
    raise AssertionError(f"Tab never reached {selector}; focus went {seen}")


def test_keyboard_alone_signs_in_opens_a_job_and_reaches_its_controls(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    stack = console_stack.stack
    page.goto(f"{stack.url}/console/")
    focus_until(page, "#client-key")
    page.keyboard.type(stack.client_key)
    page.keyboard.press("Enter")
    # Each page fills in after its API calls: wait for the content before tabbing through it.
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    focus_until(page, f'a[href="#/jobs/{finished_job.job_id}"]')
    page.keyboard.press("Enter")
    expect(page.locator("#lots li.lot")).to_have_count(3)
    expect(page.locator("#delivery-rows summary").first).to_be_visible()
    seen = focus_until(page, "#redeliver", presses=80)
    assert {"refresh-job", "retry-failed", "only-failed"} <= set(seen)
    focus_until(page, "#delivery-rows summary")
    page.keyboard.press("Enter")
    expect(page.locator("#delivery-rows details").first).to_have_attribute("open", "")


def test_every_page_passes_the_contrast_and_labels_check(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    stack = console_stack.stack
    page.goto(f"{stack.url}/console/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert page.evaluate(A11Y_CHECK) == []
    sign_in(page, stack)
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    assert page.evaluate(A11Y_CHECK) == []
    page.get_by_role("link", name=finished_job.job_id).click()
    expect(page.locator("#delivery-rows tr").first).to_contain_text("delivered")
    page.locator("#delivery-rows summary").first.click()
    assert page.evaluate(A11Y_CHECK) == []


def test_the_console_is_served_with_a_strict_content_security_policy(console_stack: ConsoleStack) -> None:
    bare = httpx2.get(f"{console_stack.stack.url}/console")
    assert bare.status_code == 307 and bare.headers["location"].endswith("/console/")
    answer = httpx2.get(f"{console_stack.stack.url}/console/")
    assert answer.status_code == 200 and "LotLens console" in answer.text
    script = httpx2.get(f"{console_stack.stack.url}/console/console.js")
    assert script.headers["content-type"].startswith("text/javascript")
    # A cached copy revalidated (304) keeps the policy too: the browser applies the answer's headers.
    unchanged = httpx2.get(f"{console_stack.stack.url}/console/",
                           headers={"If-None-Match": answer.headers["etag"]})
    assert unchanged.status_code == 304
    for served in (answer, script, unchanged):
        policy = [part.strip() for part in served.headers["content-security-policy"].split(";")]
        required = {"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"}
        assert required <= set(policy), served.url
        assert "unsafe-inline" not in served.headers["content-security-policy"]


def test_the_skip_link_moves_focus_and_leaves_the_page_as_it_is(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # Followed as a link, `#main` was taken for a page: the job on screen gave way to the jobs
    # list, and on the sign-in page what was typed was lost.
    stack = console_stack.stack
    page.goto(f"{stack.url}/console/")
    page.get_by_label("Shared key").fill("typed-key")
    page.locator(".skip").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Shared key")).to_have_value("typed-key")
    open_job(page, console_stack, finished_job.job_id)
    page.locator(".skip").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text(finished_job.job_id)
    assert page.evaluate("document.activeElement.id") == "main"


def test_a_missing_key_is_named_marked_and_focused(page: Page, console_stack: ConsoleStack) -> None:
    # "Enter both the client id and the key." said neither which field was empty nor where to go.
    page.goto(f"{console_stack.stack.url}/console/")
    page.get_by_role("button", name="Sign in").click()
    key = page.get_by_label("Shared key")
    expect(key).to_have_attribute("aria-invalid", "true")
    expect(key).to_have_accessible_description("Enter the shared key.")
    expect(key).to_be_focused()


def test_a_right_to_left_description_is_laid_out_right_to_left(
        page: Page, console_stack: ConsoleStack, finished_job: FinishedJob) -> None:
    # In this left-to-right page an Arabic description's clauses and full stop came out in the
    # wrong order: nothing gave it its own direction.
    partial = finished_job.lot_ids[1]
    row = (descriptions.c.job_id == finished_job.job_id, descriptions.c.lot_id == partial,
           descriptions.c.language == "de")
    with console_stack.engine.begin() as conn:
        original = conn.execute(select(descriptions.c.damages).where(*row)).scalar_one()
        conn.execute(update(descriptions).where(*row).values(
            damages="<p>خدش 10 سم على الباب الأمامي (BMW X5).</p>"))
    try:
        open_job(page, console_stack, finished_job.job_id)
        shown = lot(page, partial).locator(".damages[lang=de]")
        expect(shown).to_contain_text("BMW X5")
        assert shown.evaluate("node => getComputedStyle(node.querySelector('p')).direction") == "rtl"
        english = lot(page, finished_job.lot_ids[0]).locator(".damages[lang=en]")
        assert english.evaluate("node => getComputedStyle(node.querySelector('p')).direction") == "ltr"
    finally:
        with console_stack.engine.begin() as conn:
            conn.execute(update(descriptions).where(*row).values(damages=original))


def test_no_page_scrolls_sideways_at_320_px(page: Page, console_stack: ConsoleStack,
                                            finished_job: FinishedJob) -> None:
    # WCAG 1.4.10 (400% zoom, small phones): the jobs page was 587 px and a job's 560 px wide, so
    # the whole page scrolled sideways; wide tables now scroll inside their own box.
    page.set_viewport_size({"width": 320, "height": 640})
    sign_in(page, console_stack.stack)
    expect(page.get_by_role("link", name=finished_job.job_id)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    page.get_by_role("link", name=finished_job.job_id).click()
    expect(page.locator("#delivery-rows tr").first).to_contain_text("delivered")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320


def test_a_running_job_is_polled_once_however_often_refreshed_can_be_held_still_and_keeps_focus(
        page: Page, console_stack: ConsoleStack) -> None:
    images, stack = console_stack.images, console_stack.stack
    prefix = new_id("poll")
    first = console_stack.submit([  # lot 1's only image is missing: it fails
        {"lot_id": f"{prefix}-{n}", "additional_info": "Dent", "image_urls": [f"{images}/{prefix}-{n}{tail}"]}
        for n, tail in enumerate([".png", "-missing.png"])], ["en"])
    wait_for(lambda: console_stack.status(first).json()["status"] == "completed", "the first job to complete",
             timeout_s=120, every_s=0.3)
    stack.kill("vision-batcher")  # the retry of the failed lot stays pending, its page polling
    try:
        answer = httpx2.post(f"{stack.url}/api/v1/batch-jobs/{first}/retry-failed",
                             headers=console_stack.headers(first))
        assert answer.is_success, answer.text
        retry = answer.json()["job_id"]
        polls: list[str] = []
        page.on("request", lambda sent: polls.append(sent.url) if "/batch-status/" in sent.url else None)
        open_job(page, console_stack, retry)
        for _ in range(5):
            page.get_by_role("button", name="Refresh").click()
        page.locator("#job-summary").get_by_role("link", name=first).focus()
        polls.clear()
        page.wait_for_timeout(3000)
        # One poll pending at a time: 1 or 2 reads in 3 s (each click used to start its own loop: 8).
        assert 1 <= len(polls) <= 2, polls
        # The "Retry of" link is rebuilt by every poll and keeps the keyboard's place.
        assert page.evaluate("document.activeElement.textContent") == first
        page.get_by_role("button", name="Pause updates").click()  # WCAG 2.2.2
        resume = page.get_by_role("button", name="Resume updates")
        expect(resume).to_have_attribute("aria-pressed", "true")
        polls.clear()
        page.wait_for_timeout(3000)
        assert polls == []
        resume.click()
        expect(page.get_by_role("button", name="Pause updates")).to_have_attribute("aria-pressed", "false")
        page.wait_for_timeout(2500)
        assert len(polls) >= 2, polls
    finally:
        stack.start("vision-batcher")
