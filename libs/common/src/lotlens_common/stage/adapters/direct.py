"""Direct mode: the batches API played locally, each request sent on its own.

For OpenAI-compatible servers without a Batch endpoint (vLLM, Ollama and the like). Creating a
"batch" sends its lines through `call` (bounded concurrency; 429/Retry-After honoured by
`call_responses`) and returns it already `completed`, with output and error files in the work
folder written in the Batch API's line format: the runner collects it like any other batch.

The result files stay until the batch's collection deletes them (`delete_file`), so a collection
that failed (Kafka or PostgreSQL down) reads them again, however long it was down, and a process
restarted on the same folder collects its predecessor's batches from them. A batch unknown here
and younger than `ORPHANED_AFTER_S` is another live instance's, left to it; an older one's maker
is gone with its answers, and its lots are sent again (on a paid endpoint, paid again). Before,
both read as lost at once: each instance sent the other's lots again, and a failed collection
sent every lot of its batch again. And the first batch made more than `KEPT_S` after one still
uncollected deleted its answers: its lots were sent again (a lot at its last attempt failed).
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


# A live instance collects a direct batch it made in the next round or two (it is finished when
# made); one that nobody has collected after this long was made by a process that is gone.
ORPHANED_AFTER_S = 300.0
# How long this process remembers a batch it made (its metadata, for a listing); its answers are
# read from the files after that.
KEPT_S = 3600.0
# How long the result files of a batch that no collection deleted are kept: those of a batch no
# shard records (its maker died before recording it, and recovery sent its lots again). As long
# as OpenAI keeps a batch's output file: a stage down for days still collects its batches.
FILES_KEPT_S = 30 * 24 * 3600.0


def _made_at(batch_id: str) -> float | None:
    """When a batch was made, from its id (`direct-batch-<unix seconds>-<hex>`)."""
    parts = batch_id.split("-")
    return float(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


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
        self._forget_old()
        batch_id = f"direct-batch-{int(time.time())}-{uuid.uuid4().hex}"
        source = self.work_dir / input_file_id
        output, errors = self._result_files(batch_id)
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
        # The output file last, each whole before it is named: its presence says both are complete.
        for path, ok_lines in ((errors, False), (output, True)):
            partial = path.with_suffix(".partial")
            partial.write_bytes(b"".join(text + b"\n" for ok, text in answers if ok == ok_lines))
            partial.replace(path)
        batch = self._completed(batch_id, metadata, input_file_id)
        self.batches[batch_id] = batch
        return dict(batch)

    def _result_files(self, batch_id: str) -> tuple[Path, Path]:
        return self.work_dir / f"{batch_id}-output", self.work_dir / f"{batch_id}-errors"

    def _completed(self, batch_id: str, metadata: Mapping[str, str],
                   input_file_id: str | None) -> dict[str, Any]:
        output, errors = self._result_files(batch_id)
        return {"id": batch_id, "status": "completed", "created_at": int(_made_at(batch_id) or time.time()),
                "metadata": dict(metadata), "input_file_id": input_file_id,
                "output_file_id": output.name, "error_file_id": errors.name}

    def _forget_old(self) -> None:
        """Forget the batches made more than `KEPT_S` ago (their files stay for their collection),
        and delete the result files older than `FILES_KEPT_S` that no collection deleted."""
        now = time.time()
        for batch_id in [b for b in self.batches if now - (_made_at(b) or 0.0) > KEPT_S]:
            del self.batches[batch_id]
        for path in self.work_dir.glob("direct-batch-*"):
            made = _made_at(path.name.rsplit("-", 1)[0])
            if made is not None and now - made > FILES_KEPT_S:
                path.unlink(missing_ok=True)

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch: this process's, its predecessor's on this folder (from its files), another
        live instance's (running, to be left to it), or one whose maker is gone (failed)."""
        known = self.batches.get(batch_id)
        if known is not None:
            return dict(known)
        if self._result_files(batch_id)[0].exists():
            # Kept like this process's own, so its files go with them after `KEPT_S`.
            self.batches[batch_id] = self._completed(batch_id, {}, None)
            return dict(self.batches[batch_id])
        made = _made_at(batch_id)
        if made is not None and time.time() - made < ORPHANED_AFTER_S:
            return {"id": batch_id, "status": "in_progress", "created_at": int(made)}
        return {"id": batch_id, "status": "failed",
                "errors": {"data": [{"code": "direct_batch_lost",
                                     "message": "made by a process that is gone"}]}}

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        """This process's batches with these metadata pairs."""
        return [dict(batch) for batch in reversed(self.batches.values())
                if all(batch["metadata"].get(k) == v for k, v in metadata_match.items())]

    async def find_batch(self, metadata_match: Mapping[str, str],
                         limit_pages: int = 50) -> dict[str, Any] | None:
        """This process's newest batch with these metadata pairs."""
        return next(iter(await self.find_batches(metadata_match, limit_pages)), None)

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Nothing to cancel: a direct batch is finished when created."""
        return await self.retrieve_batch(batch_id)

    async def iter_file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        """A result file's lines (kept: a failed collection reads them again)."""
        path = self.work_dir / file_id
        if not path.exists():
            return
        for line in path.read_bytes().splitlines():
            if line.strip():
                yield line
