"""The Files API: contents on disk, streamed both ways; metadata in memory and in the state directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile

from lotlens_openai_standin.api_errors import bad_request, not_found
from lotlens_openai_standin.durable import StateStore
from lotlens_openai_standin.faults import Stats
from lotlens_openai_standin.ids import new_id, new_token, unix_now

MB = 1024 * 1024
# OpenAI's "200 MB" and "512 MB", read as decimal megabytes, the stricter reading (the client's
# limits.py reads them so too): as MiB, a file OpenAI may refuse was accepted here.
BATCH_FILE_LIMIT = 200_000_000
ANY_FILE_LIMIT = 512_000_000
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_FILE_TTL_SECONDS = 30 * 24 * 3600
_CHUNK = 1 * MB
# Files read line by line (batch input) through a buffer this big: each read lets go of the GIL,
# and the batch runner's thread then waited for it while the event loop served requests.
LINE_BUFFER = 1 * MB


class _ContentResponse(FileResponse):
    # Starlette reads 64 kB at a time, each read a hop to a worker thread and back: the vision
    # output of a 50,000-lot job (about 2.5 kB a line) took about 1,900 of them.
    chunk_size = _CHUNK


@dataclass
class FileRecord:
    """One stored file; its bytes live at `path`."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path

    def to_object(self) -> dict[str, Any]:
        """The File object OpenAI returns."""
        expires = self.created_at + BATCH_FILE_TTL_SECONDS if self.purpose.startswith("batch") else None
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": expires, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}

    def to_state(self) -> dict[str, Any]:
        """The record as kept in the state directory."""
        return asdict(self) | {"path": str(self.path)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FileRecord:
        """A record read back from the state directory."""
        return cls(**(state | {"path": Path(state["path"])}))


class FileTooLargeError(Exception):
    """The upload went past its purpose's size limit."""


def _copy_limited(source: BinaryIO, target: Path, limit: int) -> int:
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise FileTooLargeError
            out.write(chunk)
    return size


class FileStore:
    """Every file the stand-in knows: uploads and the batches' output and error files."""

    def __init__(self, root: Path, state: StateStore) -> None:
        self._root = root
        self._state = state
        root.mkdir(parents=True, exist_ok=True)
        records = (FileRecord.from_state(saved) for saved in state.load("files"))
        self._files: dict[str, FileRecord] = {record.id: record for record in records}
        self._by_path = {record.path: record for record in self._files.values()}

    def new_path(self) -> Path:
        """A fresh path under the data directory for content about to be written."""
        return self._root / new_id("blob-")

    def add(self, path: Path, filename: str, purpose: str) -> FileRecord:
        """Register content already written at `path` (from `new_path`); content registered before
        keeps its record. A kill -9 after a batch's result file was registered, before the batch
        was saved with its id, registers it again at the restart: a second record for the same
        bytes, and deleting the one the batch names left the other pointing at nothing."""
        if (known := self._by_path.get(path)) is not None:
            return known
        record = FileRecord(new_token("file-", 22), filename, purpose, path.stat().st_size, unix_now(), path)
        self._files[record.id] = record
        self._by_path[path] = record
        self._state.save("files", record.id, record.to_state())
        return record

    async def save_upload(self, upload: UploadFile, purpose: str) -> FileRecord:
        """Copy an upload to disk in chunks, refusing it past the purpose's size limit."""
        limit = BATCH_FILE_LIMIT if purpose == "batch" else ANY_FILE_LIMIT
        path = self.new_path()
        try:
            # Off the event loop: a 200 MB copy would stall every other request.
            await anyio.to_thread.run_sync(_copy_limited, upload.file, path, limit)
        except FileTooLargeError:
            path.unlink(missing_ok=True)
            # OpenAI's words, with no code or param (as seen from its API): a client deciding by
            # the code alone would never shrink its files.
            raise bad_request("File is too large.") from None
        return self.add(path, upload.filename or "upload", purpose)

    def remove_orphans(self, in_use: set[str]) -> None:
        """Delete contents that belong to no file and to no running batch (a kill interrupted their write)."""
        kept = {record.path.name for record in self._files.values()} | {Path(path).name for path in in_use}
        for blob in self._root.glob("blob-*"):
            if blob.name not in kept:
                blob.unlink(missing_ok=True)

    def get(self, file_id: str) -> FileRecord:
        """The file, or OpenAI's 404."""
        record = self._files.get(file_id)
        if record is None:
            raise not_found(f"No such File object: {file_id}", param="id")
        return record

    def delete(self, file_id: str) -> None:
        """Forget the file and remove its bytes."""
        record = self.get(file_id)
        del self._files[file_id]
        del self._by_path[record.path]
        self._state.delete("files", file_id)
        record.path.unlink(missing_ok=True)


def files_router(store: FileStore, stats: Stats) -> APIRouter:
    """`/v1/files` routes over a store."""
    router = APIRouter()

    @router.post("/v1/files")
    async def upload_file(request: Request) -> JSONResponse:
        form = await request.form(max_files=1, max_fields=10)
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise bad_request("Missing required parameter: 'file'.", param="file",
                              code="missing_required_parameter")
        if not isinstance(purpose, str) or not purpose:
            raise bad_request("Missing required parameter: 'purpose'.", param="purpose",
                              code="missing_required_parameter")
        if purpose not in UPLOAD_PURPOSES:
            raise bad_request(f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'",
                              param="purpose", code="invalid_value")
        if purpose == "batch" and not (upload.filename or "").endswith(".jsonl"):
            raise bad_request("Invalid file format for Batch API. Must be .jsonl", param="file",
                              code="invalid_file_format")
        record = await store.save_upload(upload, purpose)
        stats.files_uploaded += 1
        return JSONResponse(record.to_object())

    @router.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str) -> JSONResponse:
        return JSONResponse(store.get(file_id).to_object())

    @router.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> FileResponse:
        record = store.get(file_id)
        # FileResponse streams from disk in chunks: a 200 MB file never sits in memory.
        return _ContentResponse(record.path, media_type="application/octet-stream")

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str) -> JSONResponse:
        store.delete(file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    return router

