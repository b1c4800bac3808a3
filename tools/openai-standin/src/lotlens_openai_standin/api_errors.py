"""OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

SERVER_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center at help.openai.com if the error persists."
)


class ApiError(Exception):
    """An error answered to the client with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI sends with this error."""
        return error_body(self.message, type_=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 `invalid_request_error`."""
    return ApiError(400, message, param=param, code=code)


def conflict(message: str) -> ApiError:
    """A 409 `invalid_request_error` with no param or code, as OpenAI refuses an action the
    object's state does not allow (a cancel of a finished batch)."""
    return ApiError(409, message)


def not_found(message: str, param: str | None = None) -> ApiError:
    """A 404 `invalid_request_error`, as OpenAI answers for unknown object ids."""
    return ApiError(404, message, param=param)


def server_error() -> ApiError:
    """A 500 `server_error`."""
    return ApiError(500, SERVER_ERROR_MESSAGE, type_="server_error")


def error_response(exc: ApiError) -> JSONResponse:
    """The HTTP response for an ApiError."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, FastAPI's own included, come back in OpenAI's shape."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Invalid method for URL ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        return JSONResponse(error_body(message), status_code=exc.status_code)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        message = f"Invalid request: {first.get('msg', 'malformed request')}"
        return JSONResponse(error_body(message, param=".".join(loc) or None), status_code=400)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
