"""Fixtures of the console's browser tests: one stack for the package, Debian's Chromium driven by Playwright.

Starting the stack costs seconds, so the package's modules share it and one finished job; each
test gets a fresh browser context (its own sessionStorage) and never changes what another test reads.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from sqlalchemy import Engine

from lotlens_common.signing import sign
from tests.conftest import Infra, fresh_topics, new_id, own_schema
from tests.e2e.conftest import running_stack
from tests.e2e.harness import Stack
from tests.polling import wait_for
from tests.seeds import seed_client_class
from tests.servers import WebhookReceiver, image_host, webhook_receiver

# Where `make screenshots`-style runs keep the PNGs (docs/console); unset, they go to tmp only.
SCREENSHOTS_ENV = "LOTLENS_CONSOLE_SCREENSHOTS"
expect.set_options(timeout=30_000)
Held = TypeVar("Held")
T = TypeVar("T")


@dataclass(frozen=True)
class ConsoleStack:
    """The running stack, its schema, the image host and the webhook receiver of the package."""

    stack: Stack
    engine: Engine
    images: str
    receiver: WebhookReceiver

    def headers(self, job_id: str) -> dict[str, str]:
        """Signed headers for a job-addressed call."""
        return {"X-Signature": sign(self.stack.client_key, job_id.encode())}

    def status(self, job_id: str) -> httpx2.Response:
        """`batch-status` of a job, signed."""
        return httpx2.get(f"{self.stack.url}/api/v1/batch-status/{job_id}", headers=self.headers(job_id))

    def submit(self, lots: list[dict[str, Any]], languages: list[str], webhook: bool = False) -> str:
        """A batch job submitted with the seed's own client; its id once the status reads it."""
        client = seed_client_class()(self.stack.url, self.stack.client_key)
        hook = f"{self.receiver.url}/hooks" if webhook else None
        job_id, error = client.batch_generate(lots, languages=languages, webhook_url=hook)
        assert error is None, error
        wait_for(lambda: self.status(job_id).status_code == 200, f"job {job_id}'s status", timeout_s=60,
                 every_s=0.3)
        return str(job_id)


@dataclass(frozen=True)
class FinishedJob:
    """A completed job: lot 0 fully described, lot 1 missing an image, lot 2 failed (no image)."""

    job_id: str
    lot_ids: list[str]
    missing_url: str


@contextmanager
def console_stack_running(infra: Infra, engine: Engine, logs: Path,
                          extra_env: Mapping[str, str] | None = None) -> Iterator[ConsoleStack]:
    """A stack on fresh topics and a schema of its own, with an image host and a webhook receiver."""
    with (fresh_topics(infra) as topics, own_schema(infra, engine) as schema, image_host() as images,
          webhook_receiver() as receiver, running_stack(infra, schema, topics, logs, extra_env) as stack):
        yield ConsoleStack(stack, schema, images, receiver)


@pytest.fixture(scope="package")
def console_stack(infra: Infra, engine: Engine,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    """One stack for the package, with its image host and webhook receiver."""
    with console_stack_running(infra, engine, tmp_path_factory.mktemp("console-stack")) as console:
        yield console


@pytest.fixture(scope="package")
def finished_job(console_stack: ConsoleStack) -> FinishedJob:
    """A three-lot job with a webhook, completed and delivered once."""
    prefix, images = new_id("con"), console_stack.images
    missing = f"{images}/{prefix}-1-missing.png"
    lots = [
        {"lot_id": f"{prefix}-0", "additional_info": "Dented left door",
         "image_urls": [f"{images}/{prefix}-0.png"]},
        {"lot_id": f"{prefix}-1", "additional_info": "Cracked bumper",
         "image_urls": [f"{images}/{prefix}-1.png", missing]},
        {"lot_id": f"{prefix}-2", "additional_info": "No photos",
         "image_urls": [f"{images}/{prefix}-2-missing.png"]},
    ]
    job_id = console_stack.submit(lots, ["en", "de"], webhook=True)
    wait_for(lambda: console_stack.status(job_id).json()["status"] == "completed", "the job to complete",
             timeout_s=120, every_s=0.3)
    wait_for(lambda: console_stack.receiver.received, "the job's webhook", timeout_s=60, every_s=0.3)
    return FinishedJob(job_id, [str(lot["lot_id"]) for lot in lots], missing)


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# until it stops, and any later test calling asyncio.run() would fail ("cannot be called from a
# running event loop").
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from Debian's package (`scripts/browser.sh` installs it)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run scripts/browser.sh (make test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture()
def page_errors() -> list[str]:
    """Script errors and console errors of the test's tab; they fail the test unless it clears them."""
    return []


@contextmanager
def new_tab(browser: Browser, page_errors: list[str], bypass_csp: bool = False) -> Iterator[Page]:
    """A fresh tab (own sessionStorage) that accepts confirmations and records script errors;
    `bypass_csp` lets a test add a script of its own (the console's policy refuses inline ones)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US",
                                  bypass_csp=bypass_csp)
    tab = context.new_page()
    tab.on("pageerror", lambda error: page_errors.append(str(error)))
    tab.on("console", lambda message: page_errors.append(message.text) if message.type == "error" else None)
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    context.close()
    # A CSP violation or an exception in console.js shows up here (HTTP errors are expected ones).
    assert [e for e in page_errors if not e.startswith("Failed to load resource")] == []


@pytest.fixture()
def page(browser: Browser, page_errors: list[str]) -> Iterator[Page]:
    """A fresh tab, the console's own policy in force."""
    with new_tab(browser, page_errors) as tab:
        yield tab


def sign_in(page: Page, stack: Stack) -> None:
    """Open the console and sign in with the stack's client's key (the key alone names the client)."""
    page.goto(f"{stack.url}/console/")
    page.get_by_label("Shared key").fill(stack.client_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")


def screenshot(page: Page, name: str, tmp_path: Path, selector: str | None = None) -> None:
    """Save a PNG of the page (or of one element) to tmp, and to docs when asked."""
    folders = [tmp_path] + ([Path(os.environ[SCREENSHOTS_ENV])] if os.environ.get(SCREENSHOTS_ENV) else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.png"
        if selector is None:
            page.screenshot(path=target, full_page=True)
        else:
            page.locator(selector).screenshot(path=target)
        assert target.stat().st_size > 1000


LOTS_PER_PAGE = 50  # console.js
WAITING_LOTS = LOTS_PER_PAGE + 10
LOTS_OR_RESULTS = re.compile(r"/api/v1/(batch-results/|batch-jobs/[^/?]+/lots)")


@pytest.fixture(scope="module")
def waiting_job(console_stack: ConsoleStack, finished_job: FinishedJob) -> Iterator[str]:
    """A job of more lots than one page, held pending (no vision-batcher), cancelled afterwards.

    `finished_job` is made first: it is package-scoped, and a test of this module that was first to
    ask for it (the module run alone, or on an xdist worker that had not run test_console.py) had it
    submitted while the batcher was down here, and waited 120 s for a job that never completed."""
    stack, images = console_stack.stack, console_stack.images
    stack.kill("vision-batcher")
    try:
        prefix = new_id("wait")
        job_id = console_stack.submit([{"lot_id": f"{prefix}-{n:03}", "additional_info": "Dent",
                                        "image_urls": [f"{images}/{prefix}-{n}.png"]}
                                       for n in range(WAITING_LOTS)], ["en"])
        yield job_id
        httpx2.post(f"{stack.url}/api/v1/batch-jobs/{job_id}/cancel", headers=console_stack.headers(job_id))
    finally:
        stack.start("vision-batcher")


def open_job(page: Page, console: ConsoleStack, job_id: str) -> None:
    sign_in(page, console.stack)
    page.goto(f"{console.stack.url}/console/#/jobs/{job_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(job_id)


def staged_failed_lot(lot_id: str) -> dict[str, Any]:
    """A failed lot as `GET .../lots` lists it."""
    return {"lot_id": lot_id, "status": "failed", "processed_images": 0, "descriptions": [],
            "missing_images": [], "error_message": "No usable image"}


def staged_failed_lots(job_id: str, failed: list[str], most: int = 500) -> Callable[[Route], None]:
    """A `route` handler answering `status=failed` lots reads from `failed` as it is when asked
    (the test changes it between reads), at most `most` lots an answer as the gateway's byte cap
    cuts a page of long lots; other reads go to the API."""
    def answer(route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        if query.get("status") != ["failed"]:
            route.continue_()
            return
        limit, offset = int(query["limit"][0]), int(query["offset"][0])
        shown = failed[offset:offset + min(limit, most)]
        more = offset + len(shown) < len(failed)
        route.fulfill(json={"job_id": job_id, "status": "pending", "lots": [
            staged_failed_lot(lot_id) for lot_id in shown], "pagination": {
            "limit": len(shown) if more and shown else limit, "offset": offset, "total": len(failed),
            "has_more": more, "next_offset": offset + len(shown) if more else None}})
    return answer


def hold_once(held: list[Route], wanted: Callable[[Route], bool]) -> Callable[[Route], None]:
    """A `route` handler holding the first request `wanted` picks (the test answers it later)
    and passing every other one on."""
    def handle(route: Route) -> None:
        if not held and wanted(route):
            held.append(route)
        else:
            route.continue_()
    return handle


def on_page(page: Page, done: Callable[[], T], what: str) -> T:
    """`done`'s answer once truthy, polled in the page's own wait: Playwright calls route handlers
    only while the test waits in it."""
    return wait_for(done, what, every_s=0.1, sleep=lambda seconds: page.wait_for_timeout(seconds * 1000))


def until_held(page: Page, held: list[Held]) -> Held:
    """The held request (or what a handler kept of it), once the page has sent it."""
    return on_page(page, lambda: held, "the page to send a request to hold")[0]


def is_show_more(route: Route) -> bool:
    """A read of the lots' second page (the first Show more)."""
    return parse_qs(urlsplit(route.request.url).query).get("offset") == [str(LOTS_PER_PAGE)]
