"""Direct mode: the batches API played locally, each request sent on its own.

For OpenAI-compatible servers without a Batch endpoint (vLLM, Ollama and the like). Creating a
"batch" sends its lines through `call` (bounded concurrency; 429/Retry-After honoured by
`call_responses`) and returns it already `completed`, with output and error files in the work
folder written in the Batch API's line format: the runner collects it like any other batch. A line
the server refused (connection refused, or not made within the timeout: its request never left the
machine) is an error line with
no response and the code `not_sent`, which no answer of the server can be, and its lot goes again
without using an attempt (`core/outcomes.py`); a round the
server refused whole makes no batch at all.

A batch is its files in the work folder, nothing in memory: its record (the batch object, with
the metadata naming its shard), its error file and, written last, its output file, whose presence
says the batch is whole. Reading, listing and finding a batch read them, so a process restarted on
the same folder collects its predecessor's batches, and recovery finds the batch of a shard left
`building` (Kafka down when it was to be put on record) however long after. Before, only this
process's memory listed a batch, and forgot it after an hour or with a restart: recovery built the
shard again, its lots sent to the model twice while the first answers sat on disk.

The files stay until the batch's collection deletes them (`delete_file`; the record goes with the
output file), so a collection that failed (Kafka or PostgreSQL down) reads them again, however long
it was down. A batch unknown here and younger than `ORPHANED_AFTER_S` is another live instance's,
left to it; an older one's maker is gone with its answers, and its lots are sent again (on a paid
endpoint, paid again).
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
    ModelUnreachableError,
)
from lotlens_common.stage.core.outcomes import NOT_SENT
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
# How long the files of a batch that no collection deleted are kept: one no shard took up (say,
# its job was cancelled before recovery found it). As long as OpenAI keeps a batch's output file:
# a stage down for days still collects its batches.
FILES_KEPT_S = 30 * 24 * 3600.0
# A batch's files are named `<batch id><suffix>`.
_RECORD, _ERRORS, _OUTPUT = "-record", "-errors", "-output"


def _made_at(batch_id: str) -> float | None:
    """When a batch was made, from its id (`direct-batch-<unix seconds>-<hex>`)."""
    parts = batch_id.split("-")
    return float(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


class DirectBatches:
    """BatchesPort over a synchronous Responses endpoint."""

    # Its batch is whole when its output file is written (`find_batch` sees no other): a create
    # that failed or was cut made none, and nothing lands after it.
    creates_land_late = False

    def __init__(self, call: DirectCall, concurrency: int, work_dir: Path) -> None:
        self.call, self.concurrency, self.work_dir = call, concurrency, work_dir

    async def upload_batch_file(self, path: Path) -> str:
        """Keep the file (moved aside, so the caller's clean-up leaves it) under a new id."""
        file_id = f"direct-file-{uuid.uuid4().hex}"
        path.replace(self.work_dir / file_id)  # noqa: ASYNC240 (a rename, not I/O worth a thread)
        return file_id

    async def delete_file(self, file_id: str) -> None:
        """Remove a kept file; an output file takes its batch's record along (collected, it is
        listed no more)."""
        (self.work_dir / file_id).unlink(missing_ok=True)
        if file_id.endswith(_OUTPUT):
            self._record_file(file_id.removesuffix(_OUTPUT)).unlink(missing_ok=True)

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Send every line; the batch is finished when this returns."""
        self._sweep()
        batch_id = f"direct-batch-{int(time.time())}-{uuid.uuid4().hex}"
        source = self.work_dir / input_file_id
        limit = asyncio.Semaphore(self.concurrency)
        unanswered: list[ModelError] = []

        async def one(line: Mapping[str, Any]) -> tuple[bool, bytes]:
            async with limit:
                try:
                    body = await self.call(line["body"])
                except ModelError as exc:
                    # Refused before it left the machine (the server down, restarting): `not_sent`,
                    # no attempt (as a plain 503, a server restarting mid-round failed the lots it
                    # refused after `max_attempts` rounds). Not a timeout nor a dropped call: the
                    # server may have taken that request, and one that always times out (a prompt
                    # too big for it) or brings the server down must still fail after its attempts.
                    if isinstance(exc, ModelUnreachableError):
                        unanswered.append(exc)
                        # No `response`, as no HTTP answer came: a server's 4xx body saying
                        # `not_sent` made its lot go again, uncounted, for ever.
                        return False, orjson.dumps({"custom_id": line["custom_id"], "response": None,
                                                    "error": {"code": NOT_SENT, "message": str(exc)}})
                    error = {"message": str(exc), "code": getattr(exc, "code", None)}
                    response = {"status_code": _status(exc), "body": {"error": error}}
                    return False, orjson.dumps({"custom_id": line["custom_id"], "response": response})
            return True, orjson.dumps({"custom_id": line["custom_id"],
                                       "response": {"status_code": 200, "body": body}})

        lines = [orjson.loads(raw) for raw in source.read_bytes().splitlines() if raw.strip()]
        source.unlink()
        answers = await asyncio.gather(*(one(line) for line in lines))
        if lines and len(unanswered) == len(lines):
            # The server is not there (restarting, refusing connections): no batch is made, as a
            # refused `batches.create` makes none, so the shard stays `building` and recovery sends
            # it again, its lots' attempts untouched. As lines, every lot in flight failed for good
            # after `max_attempts` rounds of a few seconds each, and no OpenAI error was counted.
            raise unanswered[0]
        batch = self._completed(batch_id, metadata, input_file_id)
        output, errors = self.work_dir / batch["output_file_id"], self.work_dir / batch["error_file_id"]
        # The output file last, each whole before it is named: its presence says all are complete.
        for path, content in ((self._record_file(batch_id), orjson.dumps(batch)),
                              (errors, b"".join(text + b"\n" for ok, text in answers if not ok)),
                              (output, b"".join(text + b"\n" for ok, text in answers if ok))):
            partial = path.with_suffix(".partial")
            partial.write_bytes(content)
            partial.replace(path)
        return batch

    def _record_file(self, batch_id: str) -> Path:
        return self.work_dir / f"{batch_id}{_RECORD}"

    def _completed(self, batch_id: str, metadata: Mapping[str, str],
                   input_file_id: str | None) -> dict[str, Any]:
        return {"id": batch_id, "status": "completed", "created_at": int(_made_at(batch_id) or time.time()),
                "metadata": dict(metadata), "input_file_id": input_file_id,
                "output_file_id": f"{batch_id}{_OUTPUT}", "error_file_id": f"{batch_id}{_ERRORS}"}

    def _sweep(self) -> None:
        """Delete the files older than `FILES_KEPT_S` that no collection deleted."""
        now = time.time()
        for path in self.work_dir.glob("direct-batch-*"):
            made = _made_at(path.name.rsplit("-", 1)[0])
            if made is not None and now - made > FILES_KEPT_S:
                path.unlink(missing_ok=True)

    def _finished(self, batch_id: str) -> dict[str, Any] | None:
        """The batch as its files keep it, if they are whole (one made before records were kept
        has none, and no metadata)."""
        if not (self.work_dir / f"{batch_id}{_OUTPUT}").exists():
            return None
        try:
            return dict(orjson.loads(self._record_file(batch_id).read_bytes()))
        except FileNotFoundError:
            return self._completed(batch_id, {}, None)

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch: made on this folder (by this process or one before it, from its files),
        another live instance's (running, to be left to it), or one whose maker is gone (failed)."""
        finished = self._finished(batch_id)
        if finished is not None:
            return finished
        made = _made_at(batch_id)
        if made is not None and time.time() - made < ORPHANED_AFTER_S:
            return {"id": batch_id, "status": "in_progress", "created_at": int(made)}
        return {"id": batch_id, "status": "failed",
                "errors": {"data": [{"code": "direct_batch_lost",
                                     "message": "made by a process that is gone"}]}}

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        """The batches on this folder not collected yet with these metadata pairs, newest first."""
        found = (self._finished(path.name.removesuffix(_RECORD))
                 for path in self.work_dir.glob(f"direct-batch-*{_RECORD}"))
        return sorted((batch for batch in found if batch is not None
                       and all(batch["metadata"].get(k) == v for k, v in metadata_match.items())),
                      key=lambda batch: int(batch["created_at"]), reverse=True)

    async def find_batch(self, metadata_match: Mapping[str, str],
                         limit_pages: int = 50) -> dict[str, Any] | None:
        """The newest batch on this folder with these metadata pairs."""
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
