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
