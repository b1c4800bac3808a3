"""The stand-in application factory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from lotlens_openai_standin.answers import ENDPOINTS
from lotlens_openai_standin.api_errors import error_body, error_response, install_error_handlers
from lotlens_openai_standin.batches import BatchService, batches_router
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.direct import direct_router
from lotlens_openai_standin.durable import StateStore
from lotlens_openai_standin.fault_answers import fault_error
from lotlens_openai_standin.faults import Faults, Stats, control_router
from lotlens_openai_standin.files import FileStore, files_router
from lotlens_openai_standin.ledger import BatchLedger

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
    return _temporary_dir(), True


_TEMP_PREFIX = "lotlens-standin-"


def _temporary_dir() -> Path:
    """A new temporary folder named after this process, once those of dead stand-ins are gone.

    Only a graceful stop removes a stand-in's own folder; one killed (kill -9, a test's timeout)
    leaves its files behind, so the next start clears the folders whose process no longer exists.
    """
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{_TEMP_PREFIX}*-*"):
        owner = folder.name.removeprefix(_TEMP_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        with suppress(PermissionError):  # it exists, as another user's process
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _control_snapshot(faults: Faults, stats: Stats) -> dict[str, Any]:
    return {"faults": faults.as_dict(), "stats": stats.as_dict()}


class _Gate:
    """What every request passes first: the key check, then the faults; control state saved after.

    Plain ASGI rather than `@app.middleware("http")`: that wrapper carries every chunk of a streamed
    batch file through a memory stream, once per middleware.
    """

    def __init__(self, app: ASGIApp, config: StandinConfig, faults: Faults, stats: Stats,
                 state: StateStore) -> None:
        self.app, self.config, self.faults, self.stats, self.state = app, config, faults, stats, state
        self.last_control = _control_snapshot(faults, stats)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._answer(scope, receive, send)
        if self.state.enabled:
            # Faults and counters change only inside requests: save them when a request changed them.
            snapshot = _control_snapshot(self.faults, self.stats)
            if snapshot != self.last_control:
                self.state.save("control", "control", snapshot)
                self.last_control = snapshot

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if self.config.api_key and path.startswith("/v1/"):
            failure = _auth_failure(Headers(scope=scope).get("authorization", ""), self.config.api_key)
            if failure is not None:
                await failure(scope, receive, send)
                return
        if path in ENDPOINTS:
            self.stats.direct_calls[path] = self.stats.direct_calls.get(path, 0) + 1
        # Every injected failure of every endpoint is answered here, before the endpoint runs.
        fault = self.faults.take_fault(path, scope["method"])
        if fault is not None:
            await error_response(await fault_error(fault, self.faults, path))(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
    # With a state directory the ledger is kept there with the rest; without, beside the contents.
    ledger = BatchLedger(config.state_dir or data_dir / "ledger")
    batches = BatchService(config, files, faults, stats, state, ledger)
    if state.enabled:
        files.remove_orphans(batches.staging_paths())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batches.resume()
        yield
        await batches.shutdown()
        if owns_data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)

    app = FastAPI(title="LotLens OpenAI stand-in", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    app.add_middleware(_Gate, config=config, faults=faults, stats=stats, state=state)
    app.include_router(files_router(files, stats))
    app.include_router(batches_router(batches))
    app.include_router(direct_router(config, faults))
    app.include_router(control_router(faults, stats))
    return app
