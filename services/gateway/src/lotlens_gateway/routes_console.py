"""The web console: static files at `/console`, signing every API call in the browser.

The page holds the client's key in `sessionStorage` and signs with WebCrypto exactly as the SDK
does, so the API needs no session or cookie of its own. Descriptions are model-written HTML:
the page rebuilds them from an allowlist, and the Content-Security-Policy below forbids inline
and foreign scripts as a second wall.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CONSOLE_DIR = Path(__file__).with_name("console")
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A site that opened the console (window.open, a link with an opener) kept a handle on its
    # tab and could send it, later, to a look-alike "sign in again" page: the key typed there
    # was the site's. Same-origin puts the tab in a browsing context group of its own.
    "Cross-Origin-Opener-Policy": "same-origin",
    # The rest of the OWASP Secure Headers project's set that applies to the page: no embedding
    # by other sites (frame-ancestors, for browsers that ignore it), no loading of its files
    # from another origin, no Flash/PDF cross-domain policy, no powerful feature it never uses.
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Permitted-Cross-Domain-Policies": "none",
    "Permissions-Policy": ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), "
                           "hid=(), display-capture=(), clipboard-read=(), publickey-credentials-get=()"),
    # The key lives in the page's session: a stale copy of the script must never be served.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """`StaticFiles` whose answers carry the console's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file (or `index.html`) with the headers added."""
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


async def _to_console(_: Request) -> Response:
    # A path alone: Starlette's slash redirect built its URL from the Host header, so
    # `Host: evil.example` sent the browser to http://evil.example/console/.
    return RedirectResponse("/console/", status_code=307)


def mount_console(app: FastAPI) -> None:
    """Serve the console under `/console/` (`/console` redirects there, within the origin)."""
    app.add_route("/console", _to_console, methods=["GET"], include_in_schema=False)
    app.mount("/console", ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")
