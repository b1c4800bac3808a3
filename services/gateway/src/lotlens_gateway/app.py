"""The FastAPI application: routes, error handlers and the OpenAPI document; while it runs, the
operations listener on its own port (ops_port.py). Nothing connects here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lotlens_common import tracing
from lotlens_gateway import (
    routes_jobs,
    routes_lots,
    routes_ops,
    routes_retry,
    routes_submit,
    routes_webhooks,
    schemas,
)
from lotlens_gateway.deps import GatewayDeps
from lotlens_gateway.errors import install_error_handlers
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.ops_port import ops_listener
from lotlens_gateway.request_target import AbsoluteFormTarget
from lotlens_gateway.request_tracing import RequestTracer
from lotlens_gateway.routes_console import mount_console
from lotlens_gateway.shutdown import ShutdownCut

DESCRIPTION = """\
LotLens describes the visible damage of auction cars in up to 10 languages, compatible with the
"Generation Service API v2.0" (and its 1.x cURL recipes).

* **Signing**: HMAC-SHA256 with the client's shared key. Submissions sign the `lots` array
  (`json.dumps(lots, separators=(",", ":"), sort_keys=True)`) in the body's `signature` or in
  `X-Signature`; every other `/api/v1` call sends `X-Signature: sha256=<hex>` over the job id of
  the path, the raw query string (`batch-jobs`) or the raw body (`test-image-validation`). The
  `sha256=` prefix is optional. Missing: 401 `MISSING_SIGNATURE`; wrong: 403 `INVALID_SIGNATURE`.
* **Errors** are always `{error, message, code, details?}`.
* **Listings** (`batch-jobs`, a job's `lots` and `webhooks`) read a query parameter sent empty
  (`?status=&limit=&offset=`, the contract's notation) as one not sent: no filter, the default page.
* **Rate limits** per client in any 60 s, a sliding window (configurable): 100 synchronous, 10
  batch, 1000 polling requests; past them 429 `RATE_LIMIT_EXCEEDED` with `Retry-After`, the
  seconds until one more is accepted (refused requests are not counted).
* **Connections** (configurable): a request line and headers over 32 KiB are refused with 431
  `HEADERS_TOO_LARGE` on any path, a head not complete within 10 s with 408 `REQUEST_TIMEOUT`,
  and the connection is closed after either; idle keep-alive connections are closed after 5 s.
  A request target may be a whole URL (`GET http://host/api/v1/... HTTP/1.1`, RFC 9112 3.2.2).
  A client that takes no byte of its answer for 30 s is disconnected.
* **Downloads** (configurable): a client's `batch-results`, `download` and lots pages being sent
  at once are at most 4 (past them 429 `RATE_LIMIT_EXCEEDED`, `details.reason`
  `concurrent_downloads`), the process's at most 32 (503 `DOWNLOADS_BUSY`); both with
  `Retry-After`.
* **Synchronous lots** (configurable): a client's lots being described at once are at most 50
  (past them 429 `RATE_LIMIT_EXCEEDED`, `details.reason` `concurrent_synchronous_lots`, not
  counted against its rate limit), the process's at most 100 (503 `SYNCHRONOUS_BUSY`); both at
  once, with `Retry-After`. A lot's budget runs from its request's arrival.
"""


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes, tags=app.openapi_tags)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in schemas.REQUEST_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    return build


def create_app(deps: GatewayDeps) -> FastAPI:
    """The gateway app over the given collaborators."""
    # No /docs or /redoc: they load Swagger UI and Redoc from a CDN (floating versions, no
    # integrity check) on the origin where the console keeps the client's key. /openapi.json stays.
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for admin in deps.admin_processes:  # started here, not on a probe's path
            await run_in_threadpool(admin.start)
        async with ops_listener(deps):
            yield
        await deps.close_clients()

    # No slash redirects (`/health/` → `/health`): Starlette builds their URL from the Host header,
    # so any path could send a browser to another origin; `/console` has its own (routes_console).
    app = FastAPI(title="LotLens gateway", version="2.0.0", description=DESCRIPTION,
                  docs_url=None, redoc_url=None, lifespan=lifespan, redirect_slashes=False,
                  openapi_tags=[{"name": "generation"}, {"name": "batch jobs"}, {"name": "operations"}])
    app.state.deps = deps
    install_error_handlers(app)
    app.include_router(routes_submit.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_retry.router)
    app.include_router(routes_lots.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_ops.router)
    mount_console(app)
    app.openapi = _openapi(app)  # type: ignore[method-assign]

    # Inside the others: its 503 is counted, marked and HEAD-stripped.
    app.add_middleware(ShutdownCut, in_flight=deps.in_flight)
    app.add_middleware(HeadAsGet)
    app.add_middleware(ApiHeaders)
    app.add_middleware(RequestCounter, metrics=deps.metrics)
    if tracing.enabled():
        app.add_middleware(RequestTracer)
    app.add_middleware(AbsoluteFormTarget)  # outermost: every other one sees the path the target names
    return app


# RFC 9110's methods (and PATCH): any other is counted as "other". Every made-up method (HTTP
# allows any token) was a new, permanent series, so anyone, unsigned, could grow /metrics.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class RequestCounter:
    """Counts requests by method, route template and status (a plain ASGI middleware: streams pass)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, noting the response status."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = [500]

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, noting_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
            labels = {"method": method, "route": route, "status": str(status[0])}
            self._metrics.http_requests.labels(**labels).inc()


_API_HEADERS = {b"cache-control": b"no-store", b"x-content-type-options": b"nosniff"}


class ApiHeaders:
    """`Cache-Control: no-store` and `X-Content-Type-Options: nosniff` on every API answer, errors
    and 202s too. They are per client and change as the job runs: without it a 200 is
    heuristically cacheable (RFC 9111 4.2.2), and the X-Signature header, unlike Authorization,
    does not keep a shared cache from serving a stored answer to the next asker, signed or not.
    The answers carry model-written HTML in JSON: no browser is to sniff them as a page."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, marking an API answer's head."""
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self._app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() not in _API_HEADERS]
                message = {**message, "headers": [*headers, *_API_HEADERS.items()]}
            await send(message)

        await self._app(scope, receive, marked)


class HeadAsGet:
    """HEAD answered as GET without the body (RFC 9110 9.1: every general-purpose server supports
    HEAD; FastAPI's GET routes answered it 405, and `curl -I` and uptime probes saw an error).

    Innermost, so metrics and traces still say HEAD. The server keeps its own scope (still HEAD),
    so uvicorn drops the body too; dropping it here holds under any server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a HEAD on as a GET and send its answer's head alone."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self._app(scope, receive, send)
            return

        async def head_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {"type": "http.response.body", "body": b"", "more_body": False}
                if sent_end[0]:
                    return
                sent_end[0] = True
            await send(message)

        sent_end = [False]
        as_get = {**scope, "method": "GET"}
        try:
            await self._app(as_get, receive, head_only)
        finally:
            if "route" in as_get:  # the route matched, for the request metrics outside
                scope["route"] = as_get["route"]
