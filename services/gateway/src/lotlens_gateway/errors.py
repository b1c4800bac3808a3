"""One exception for every API error, and the handlers that render the contract's error body.

Every error answer is `{error, message, code, details?}`: `error` a short title, `message` for
humans, `code` for programs (e.g. `INVALID_SIGNATURE`), `details` the facts behind it. Nothing
reaches the client as a bare 500 or a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lotlens_common.producer import PublishError

log = logging.getLogger(__name__)

TITLES = {
    400: "Invalid request format",
    401: "Authentication required",
    403: "Authentication failed",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Request too large",
    422: "Validation failed",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    502: "External service error",
    503: "Service unavailable",
    504: "External service timeout",
}


class ApiError(Exception):
    """An error answer: HTTP status, machine code, human message, optional details and headers."""

    def __init__(self, status: int, code: str, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.error = error or TITLES.get(status, "Error")

    def body(self) -> dict[str, Any]:
        """The contract's error body."""
        body: dict[str, Any] = {"error": self.error, "message": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body

    def response(self) -> JSONResponse:
        """The error as a JSON response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def validation_failed(message: str, details: dict[str, Any], code: str = "VALIDATION_ERROR") -> ApiError:
    """A 422 with the given code."""
    return ApiError(422, code, message, details=details)


def job_not_found(job_id: str) -> ApiError:
    """404 for a job that does not exist or belongs to another client (indistinguishable on purpose)."""
    return ApiError(404, "JOB_NOT_FOUND", f"Job {job_id} not found", details={"job_id": job_id})


def client_closed(before: str) -> ApiError:
    """499 (nginx's): the client closed the connection first; only the access log and metrics see it."""
    return ApiError(499, "CLIENT_CLOSED_REQUEST", f"The client closed the connection before {before}")


def unavailable(what: str) -> ApiError:
    """503: a dependency (database, Kafka) is down; the request may be retried."""
    return ApiError(503, "SERVICE_UNAVAILABLE", f"{what} is unavailable, please retry later",
                    headers={"Retry-After": "5"})


def write_unconfirmed() -> ApiError:
    """503 for a write whose COMMIT PostgreSQL got but whose outcome it could not report (a failover)."""
    return ApiError(503, "SERVICE_UNAVAILABLE",
                    "The database lost its answer to this request and cannot say yet whether it was "
                    "written. Resend it with the same Idempotency-Key (its answer is replayed if it was), "
                    "or look for it before sending it again", details={"written": "unknown"},
                    headers={"Retry-After": "5"})


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
              for error in exc.errors()]
    details = {"errors": jsonable_encoder(errors)}
    return validation_failed("Request parameters are invalid", details).response()


async def _http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    code = codes.get(exc.status_code, f"HTTP_{exc.status_code}")
    return ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})).response()


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return unavailable("The database").response()


async def _kafka_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("kafka error: %s", exc)
    return unavailable("The event log (Kafka)").response()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after answering, so the server logs the traceback; one line here.
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
    return ApiError(500, "INTERNAL_ERROR", "An unexpected error occurred").response()


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the contract's error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database_error)
    app.add_exception_handler(sqlalchemy.exc.InterfaceError, _database_error)
    app.add_exception_handler(PublishError, _kafka_error)
    app.add_exception_handler(KafkaException, _kafka_error)
    app.add_exception_handler(Exception, _unexpected)
