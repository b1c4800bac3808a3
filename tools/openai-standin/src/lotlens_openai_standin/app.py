"""The stand-in application factory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lotlens_openai_standin.api_errors import error_body, install_error_handlers
from lotlens_openai_standin.batches import BatchService, batches_router
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.direct import direct_router
from lotlens_openai_standin.faults import Faults, Stats, control_router
from lotlens_openai_standin.files import FileStore, files_router

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) "
    "if you're accessing the API from your browser and are prompted for a username and password. You "
    "can obtain an API key from https://platform.openai.com/account/api-keys."
)


def _auth_failure(header: str, api_key: str) -> JSONResponse | None:
    if not header:
        return JSONResponse(error_body(_NO_KEY), status_code=401)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != api_key:
        shown = token.strip()[:3] + "*" * 10 + token.strip()[-4:] if len(token.strip()) > 8 else "***"
        message = (f"Incorrect API key provided: {shown}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.")
        return JSONResponse(error_body(message, code="invalid_api_key"), status_code=401)
    return None


def create_app(config: StandinConfig) -> FastAPI:
    """An OpenAI-compatible app (Files, Batches, Responses, Chat Completions) plus `/_standin/` controls."""
    data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="lotlens-standin-"))
    owns_data_dir = config.data_dir is None
    faults, stats = Faults(), Stats()
    files = FileStore(data_dir)
    batches = BatchService(config, files, faults, stats)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batches.shutdown()
        if owns_data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)

    app = FastAPI(title="LotLens OpenAI stand-in", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.middleware("http")
    async def require_api_key(request: Request,
                              call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if config.api_key and request.url.path.startswith("/v1/"):
            failure = _auth_failure(request.headers.get("authorization", ""), config.api_key)
            if failure is not None:
                return failure
        return await call_next(request)

    app.include_router(files_router(files, stats))
    app.include_router(batches_router(batches))
    app.include_router(direct_router(config, faults, stats))
    app.include_router(control_router(faults, stats))
    return app
