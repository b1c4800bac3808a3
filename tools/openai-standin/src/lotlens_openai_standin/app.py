"""The stand-in application factory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lotlens_openai_standin.answers import ENDPOINTS
from lotlens_openai_standin.api_errors import error_body, error_response, install_error_handlers
from lotlens_openai_standin.batches import BatchService, batches_router
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.direct import direct_router
from lotlens_openai_standin.durable import StateStore
from lotlens_openai_standin.fault_answers import fault_error
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


def _data_dir(config: StandinConfig) -> tuple[Path, bool]:
    """Where file contents go, and whether the app made (and so removes) that directory."""
    if config.state_dir is not None:
        return config.state_dir / "blobs", False
    if config.data_dir is not None:
        return config.data_dir, False
    return Path(tempfile.mkdtemp(prefix="lotlens-standin-")), True


def _control_snapshot(faults: Faults, stats: Stats) -> dict[str, Any]:
    return {"faults": faults.as_dict(), "stats": stats.as_dict()}


def create_app(config: StandinConfig) -> FastAPI:
    """An OpenAI-compatible app (Files, Batches, Responses, Chat Completions) plus `/_standin/` controls."""
    data_dir, owns_data_dir = _data_dir(config)
    state = StateStore(config.state_dir)
    faults, stats = Faults(), Stats()
    saved_control = state.load_one("control", "control")
    if saved_control is not None:
        vars(faults).update(saved_control["faults"])
        vars(stats).update(saved_control["stats"])
    files = FileStore(data_dir, state)
    batches = BatchService(config, files, faults, stats, state)
    if state.enabled:
        files.remove_orphans(batches.staging_paths())
    last_control = [_control_snapshot(faults, stats)]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batches.resume()
        yield
        await batches.shutdown()
        if owns_data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)

    app = FastAPI(title="LotLens OpenAI stand-in", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    # Starlette runs the middleware added last first: control state, then the key check, then faults.
    @app.middleware("http")
    async def inject_faults(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Every injected failure of every endpoint is answered here, before the endpoint runs.
        path = request.url.path
        if path in ENDPOINTS:
            stats.direct_calls[path] = stats.direct_calls.get(path, 0) + 1
        fault = faults.take_fault(path)
        if fault is not None:
            return error_response(await fault_error(fault, faults))
        return await call_next(request)

    @app.middleware("http")
    async def require_api_key(request: Request,
                              call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if config.api_key and request.url.path.startswith("/v1/"):
            failure = _auth_failure(request.headers.get("authorization", ""), config.api_key)
            if failure is not None:
                return failure
        return await call_next(request)

    if state.enabled:
        @app.middleware("http")
        async def keep_control_state(request: Request,
                                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            # Faults and counters change only inside requests: save them when a request changed them.
            response = await call_next(request)
            snapshot = _control_snapshot(faults, stats)
            if snapshot != last_control[0]:
                state.save("control", "control", snapshot)
                last_control[0] = snapshot
            return response

    app.include_router(files_router(files, stats))
    app.include_router(batches_router(batches))
    app.include_router(direct_router(config))
    app.include_router(control_router(faults, stats))
    return app
