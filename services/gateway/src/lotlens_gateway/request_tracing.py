"""A server span per HTTP request, continuing the caller's W3C trace (only when tracing is on)."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lotlens_common import tracing


class RequestTracer:
    """Wraps each HTTP request in a span named after its method and route template (plain ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through inside its span."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
                   if key in (b"traceparent", b"tracestate")}
        method = scope["method"]
        with tracing.span(method, SpanKind.SERVER, tracing.extract(headers),
                          attributes={"http.request.method": method, "url.path": scope["path"]}) as span:
            assert span is not None, "added only when tracing is on"

            async def noting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self._app(scope, receive, noting_send)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
