"""Direct mode: the batches API played locally, each request sent on its own.

For OpenAI-compatible servers without a Batch endpoint (vLLM, Ollama and the like). Creating a
"batch" sends its lines through `call` (bounded concurrency; 429/Retry-After honoured by
`call_responses`) and returns it already `completed`, with output and error files in the work
folder written in the Batch API's line format: the runner collects it like any other batch.
A batch of a process that died is unknown here, so it reads as `failed` and its lots are sent
again: on a self-hosted backend a repeated request costs time, not money.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from lotlens_common.model.errors import (
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelTimeoutError,
)
from lotlens_common.stage.ports import DirectCall


def _status(exc: ModelError) -> int:
    """The HTTP status a batch line would carry for this failure."""
    if isinstance(exc, ModelRequestError):
        return exc.status_code
    if isinstance(exc, ModelRateLimitedError):
        return 429
    return 408 if isinstance(exc, ModelTimeoutError) else 503


class DirectBatches:
    """BatchesPort over a synchronous Responses endpoint."""

    def __init__(self, call: DirectCall, concurrency: int, work_dir: Path) -> None:
        self.call, self.concurrency, self.work_dir = call, concurrency, work_dir
        self.batches: dict[str, dict[str, Any]] = {}

    async def upload_batch_file(self, path: Path) -> str:
        """Keep the file (moved aside, so the caller's clean-up leaves it) under a new id."""
        file_id = f"direct-file-{uuid.uuid4().hex}"
        path.replace(self.work_dir / file_id)  # noqa: ASYNC240 (a rename, not I/O worth a thread)
        return file_id

    async def delete_file(self, file_id: str) -> None:
        """Remove a kept input file."""
        (self.work_dir / file_id).unlink(missing_ok=True)

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Send every line; the batch is finished when this returns."""
        batch_id = f"direct-batch-{uuid.uuid4().hex}"
        source = self.work_dir / input_file_id
        output, errors = (self.work_dir / f"{batch_id}-{kind}" for kind in ("output", "errors"))
        limit = asyncio.Semaphore(self.concurrency)

        async def one(line: Mapping[str, Any]) -> tuple[bool, bytes]:
            async with limit:
                try:
                    body = await self.call(line["body"])
                except ModelError as exc:
                    error = {"message": str(exc), "code": getattr(exc, "code", None)}
                    response = {"status_code": _status(exc), "body": {"error": error}}
                    return False, orjson.dumps({"custom_id": line["custom_id"], "response": response})
            return True, orjson.dumps({"custom_id": line["custom_id"],
                                       "response": {"status_code": 200, "body": body}})

        lines = [orjson.loads(raw) for raw in source.read_bytes().splitlines() if raw.strip()]
        source.unlink()
        answers = await asyncio.gather(*(one(line) for line in lines))
        output.write_bytes(b"".join(text + b"\n" for ok, text in answers if ok))
        errors.write_bytes(b"".join(text + b"\n" for ok, text in answers if not ok))
        batch = {"id": batch_id, "status": "completed", "created_at": int(time.time()),
                 "metadata": dict(metadata), "input_file_id": input_file_id,
                 "output_file_id": output.name, "error_file_id": errors.name}
        self.batches[batch_id] = batch
        return dict(batch)

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch; one made by a process that died reads as failed."""
        known = self.batches.get(batch_id)
        if known is not None:
            return dict(known)
        return {"id": batch_id, "status": "failed",
                "errors": {"data": [{"code": "direct_batch_lost",
                                     "message": "made by a process that is gone"}]}}

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        """This process's batches with these metadata pairs."""
        return [dict(batch) for batch in reversed(self.batches.values())
                if all(batch["metadata"].get(k) == v for k, v in metadata_match.items())]

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Nothing to cancel: a direct batch is finished when created."""
        return await self.retrieve_batch(batch_id)

    async def iter_file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        """A result file's lines; it is deleted once read (nothing reads it twice)."""
        path = self.work_dir / file_id
        if not path.exists():
            return
        for line in path.read_bytes().splitlines():
            if line.strip():
                yield line
        path.unlink(missing_ok=True)
