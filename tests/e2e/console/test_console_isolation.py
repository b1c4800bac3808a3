"""The console's tab held apart from other sites, in a real browser, as the OWASP Secure Headers
project recommends: a page that opened it keeps no handle on it, and no site frames or embeds it."""

from __future__ import annotations

import httpx2
import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.console.conftest import ConsoleStack
from tests.servers import free_port

pytestmark = pytest.mark.e2e

# Another origin (a port of its own), answered by the browser's router: no server behind it.
FOREIGN_PAGE = "<!doctype html><title>Elsewhere</title><h1>Elsewhere</h1>"


def test_a_site_that_opened_the_console_keeps_no_handle_on_its_tab(
        page: Page, console_stack: ConsoleStack, page_errors: list[str]) -> None:
    # Without Cross-Origin-Opener-Policy, a site linking to the console (window.open, or a link
    # with target=_blank and an opener) could later send the console's tab to a look-alike
    # "sign in again" page of its own while the user believes it is the console: the key typed
    # there is the attacker's.
    foreign = f"http://127.0.0.1:{free_port()}"

    def serve_foreign(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=FOREIGN_PAGE)

    page.context.route(f"{foreign}/**", serve_foreign)
    page.goto(f"{foreign}/opener.html")
    with page.context.expect_page() as opened:
        page.evaluate("url => { window.consoleTab = window.open(url); }",
                      f"{console_stack.stack.url}/console/")
    console = opened.value
    console.on("pageerror", lambda error: page_errors.append(str(error)))
    console.on("console", lambda message: page_errors.append(message.text)
               if message.type == "error" else None)
    expect(console.get_by_role("heading", level=1)).to_have_text("Sign in")

    assert console.evaluate("window.opener === null"), "the console's tab still names the site that opened it"
    assert page.evaluate("window.consoleTab.closed"), "the opening site still holds the console's tab"

    # The console works under its headers: signing in lists the jobs.
    console.get_by_label("Shared key").fill(console_stack.stack.client_key)
    console.get_by_role("button", name="Sign in").click()
    expect(console.get_by_role("heading", level=1)).to_have_text("Jobs")


def test_the_console_sends_the_owasp_isolation_headers(console_stack: ConsoleStack) -> None:
    url = console_stack.stack.url
    for path in ("/console/", "/console/console.js", "/console/console.css"):
        served = httpx2.get(f"{url}{path}")
        assert served.status_code == 200, path
        headers = served.headers
        assert headers.get("cross-origin-opener-policy") == "same-origin", path
        # Legacy browsers that ignore CSP frame-ancestors honour this one.
        assert headers.get("x-frame-options") == "DENY", path
        assert headers.get("cross-origin-resource-policy") == "same-origin", path
        assert headers.get("x-permitted-cross-domain-policies") == "none", path
        assert "camera=()" in headers.get("permissions-policy", ""), path
