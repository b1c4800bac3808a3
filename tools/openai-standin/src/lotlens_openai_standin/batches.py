"""The Batch API: batches move through their statuses in background tasks, on wall-clock time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lotlens_openai_standin.api_errors import ApiError, bad_request, conflict, not_found
from lotlens_openai_standin.batch_input import batch_error, validate_input_file
from lotlens_openai_standin.batch_record import ACTIVE_STATUSES, BatchRecord, check_create_params
from lotlens_openai_standin.batch_run import RunState, run_slice, write_unexecuted
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.durable import StateStore
from lotlens_openai_standin.faults import Faults, Stats
from lotlens_openai_standin.files import FileStore
from lotlens_openai_standin.ids import new_id, unix_now
from lotlens_openai_standin.ledger import BatchLedger
from lotlens_openai_standin.request_json import read_json_object

log = logging.getLogger(__name__)


class BatchService:
    """Creates, lists and cancels batches, and drives each one to a terminal status."""

    def __init__(self, config: StandinConfig, files: FileStore, faults: Faults, stats: Stats,
                 state: StateStore, ledger: BatchLedger) -> None:
        self._config = config
        self._files = files
        self._faults = faults
        self._stats = stats
        self._state = state
        self.ledger = ledger
        batches = (BatchRecord.from_state(saved) for saved in state.load("batches"))
        self._batches: dict[str, BatchRecord] = {batch.id: batch for batch in batches}
        self._sequence = itertools.count(max((b.sequence for b in self._batches.values()), default=-1) + 1)
        self._tasks: set[asyncio.Task[None]] = set()
        if config.enqueued_token_limit:
            self._estimate_running()

    def _estimate_running(self) -> None:
        """Estimate the batches a run without a limit left running past validation: uncounted, they
        let a batch in past a limit set at this start (a `validating` one is validated again)."""
        for batch in self._batches.values():
            validated = batch.status in ACTIVE_STATUSES and batch.status != "validating"
            if not validated or batch.estimated_tokens is not None:
                continue
            try:
                path = self._input_path(batch)
            except FileNotFoundError:
                continue  # it fails when it next reads its input
            batch.estimated_tokens = validate_input_file(path, batch.endpoint).estimated_tokens
            self._save(batch)

    def resume(self) -> None:
        """Carry on driving every batch a previous run left unfinished (call on the event loop)."""
        for batch in self._batches.values():
            if batch.status in ACTIVE_STATUSES:
                self._start(batch)

    def _start(self, batch: BatchRecord) -> None:
        task = asyncio.create_task(self._drive(batch), name=f"standin-{batch.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _save(self, batch: BatchRecord) -> None:
        self._state.save("batches", batch.id, batch.to_state())

    def _move(self, batch: BatchRecord, status: str) -> None:
        batch.move_to(status, unix_now())
        self._save(batch)

    def create(self, payload: dict[str, Any]) -> BatchRecord:
        """Validate the create request and start the batch's lifecycle."""
        input_file_id, endpoint, metadata = check_create_params(payload)
        source = self._files.get(input_file_id)
        if source.purpose != "batch":
            raise bad_request(f"The input file {input_file_id} must be uploaded with purpose 'batch'.",
                              param="input_file_id", code="invalid_value")
        batch = BatchRecord(id=new_id("batch_", 32), endpoint=endpoint, input_file_id=input_file_id,
                            created_at=unix_now(), sequence=next(self._sequence), metadata=metadata,
                            outcome=self._faults.take_batch_outcome(),
                            fail_custom_ids_containing=self._faults.fail_custom_ids_containing,
                            window_ends=time.time() + self._config.completion_window_seconds)
        self._batches[batch.id] = batch
        self._save(batch)
        self._stats.batches_created += 1
        self._stats.batch_metadata.append(dict(metadata or {}))
        self._start(batch)
        return batch

    def get(self, batch_id: str) -> BatchRecord:
        """The batch, or OpenAI's 404."""
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found(f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def shown(self, batch_id: str) -> dict[str, Any]:
        """The batch as a retrieve shows it (the `output_lag_reads` fault hides a completed one's output)."""
        shown = self.get(batch_id).to_object()
        if shown["status"] == "completed" and shown["output_file_id"] and self._faults.take_output_lag():
            shown["output_file_id"] = None
        return shown

    def page(self, limit: int, after: str | None) -> dict[str, Any]:
        """One page of the list, newest first, with OpenAI's cursor fields."""
        ordered = sorted(self._batches.values(), key=lambda b: b.sequence, reverse=True)
        if after is not None:
            position = next((i for i, b in enumerate(ordered) if b.id == after), None)
            ordered = ordered[position + 1:] if position is not None else []
        chosen = ordered[:limit]
        data = [b.to_object() for b in chosen]
        return {"object": "list", "data": data, "first_id": chosen[0].id if chosen else None,
                "last_id": chosen[-1].id if chosen else None, "has_more": len(ordered) > limit}

    def cancel(self, batch_id: str) -> BatchRecord:
        """Start cancelling a batch that is still running; OpenAI's 409 for one that cannot be."""
        batch = self.get(batch_id)
        if batch.status in ("cancelling", "cancelled"):
            return batch
        # OpenAI refuses a cancel once the batch is `finalizing` (409), as the README's errors
        # table and the stage's `CANNOT_CANCEL` say; the stand-in accepted it.
        if batch.status not in ("validating", "in_progress"):
            raise conflict(f"Cannot cancel a batch with status '{batch.status}'.")
        self._move(batch, "cancelling")
        batch.cancel_requested.set()
        return batch

    async def shutdown(self) -> None:
        """Stop every lifecycle task (app shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pause(self, batch: BatchRecord, phase_seconds: float) -> bool:
        """Wait out the rest of the current phase; True when a cancel arrived meanwhile."""
        return await self._wait(batch, batch.phase_started + phase_seconds)

    async def _wait(self, batch: BatchRecord, until: float) -> bool:
        """Sleep until a wall-clock time (kept across restarts); True when a cancel arrived meanwhile."""
        try:
            await asyncio.wait_for(batch.cancel_requested.wait(), timeout=max(0.0, until - time.time()))
        except TimeoutError:
            return batch.cancel_requested.is_set()
        return True

    def _enqueued_tokens(self, model: str) -> int:
        return sum(b.estimated_tokens or 0 for b in self._batches.values()
                   if b.model == model and b.status in ACTIVE_STATUSES)

    async def _drive(self, batch: BatchRecord) -> None:
        try:
            await self._phases(batch)
        except FileNotFoundError:
            # Deleted while the batch ran: its task died of the lookup's 404, and the batch stayed
            # `validating` or `in_progress` for good.
            message = f"The input file {batch.input_file_id} was deleted before the batch finished."
            self._fail(batch, [batch_error("file_not_found", message)])
        except Exception:
            # A defect of the stand-in: uncaught, the task died and the batch stayed running for
            # good (a cancel never got past `cancelling`). OpenAI fails a batch it cannot run.
            log.exception("batch %s failed on an internal error", batch.id)
            self._fail(batch, [batch_error("server_error", "The batch failed due to an internal error.")])

    def _input_path(self, batch: BatchRecord) -> Path:
        """Where the batch's input file is; FileNotFoundError once it was deleted, like reading
        a path that a delete removed meanwhile."""
        try:
            return self._files.get(batch.input_file_id).path
        except ApiError as exc:
            raise FileNotFoundError(exc.message) from None

    def _fail(self, batch: BatchRecord, errors: list[dict[str, Any]]) -> None:
        """`failed`, with these errors and, like OpenAI's failed batches, no result files."""
        batch.errors = errors
        if batch.run is not None:
            for path in (batch.run.output_path, batch.run.error_path):
                Path(path).unlink(missing_ok=True)
        self._move(batch, "failed")

    async def _phases(self, batch: BatchRecord) -> None:
        # Each block resumes its status, so a batch reloaded after a restart continues where it was.
        if batch.status == "validating":
            if await self._pause(batch, self._config.validating_seconds):
                await self._finish_cancel(batch)
                return
            if not await self._validate(batch):
                return
        if batch.status == "in_progress":
            ending = await self._progress(batch)
            if ending == "expired":
                await self._expire(batch)
                return
            # A cancel that landed during the last slice moved it to `cancelling` already: it
            # went back to `finalizing`, then `cancelling` again with a second `cancelling_at`.
            if ending == "finalizing" and batch.status == "in_progress":
                self._move(batch, "finalizing")
        if _stuck(batch):
            return  # for good (a restart resumes it here again)
        if batch.status == "finalizing" and not await self._pause(batch, self._config.finalizing_seconds):
            self._publish_results(batch)
            self._move(batch, "completed")
            return
        await self._finish_cancel(batch)

    async def _validate(self, batch: BatchRecord) -> bool:
        path = self._input_path(batch)
        limit = self._config.enqueued_token_limit
        # Without a limit nothing reads a batch's enqueued tokens: not estimated (None) until a start
        # with one (`_estimate_running`).
        summary = await anyio.to_thread.run_sync(validate_input_file, path, batch.endpoint, bool(limit))
        batch.model, batch.estimated_tokens = summary.model, summary.estimated_tokens
        errors = summary.errors
        if not errors and batch.outcome == "failed":
            errors = [batch_error("standin_injected_failure", "The batch failed (fault injected by the "
                                  "stand-in).")]
        if not errors and limit and summary.model and self._enqueued_tokens(summary.model) > limit:
            message = (f"Enqueued token limit reached for {summary.model} in organization org-standin. "
                       f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches "
                       "have been completed.")
            errors = [batch_error("token_limit_exceeded", message)]
        if batch.cancel_requested.is_set():
            await self._finish_cancel(batch)
            return False
        if errors:
            self._fail(batch, errors)
            return False
        batch.total = summary.total
        # Before the move: a kill in between validates it again on restart, and saves this again.
        self.ledger.record_requests(batch.id, summary.custom_ids)
        batch.run = RunState(str(self._files.new_path()), str(self._files.new_path()))
        self._move(batch, "in_progress")
        return True

    async def _progress(self, batch: BatchRecord) -> str:
        """Run the requests spread over the phase; how it ends: `finalizing`, `expired` or `cancelling`."""
        assert batch.run is not None
        seconds = self._config.in_progress_seconds
        deadline = batch.window_ends
        if batch.outcome == "expired":
            # The injected expiry: the window closes halfway through the phase.
            deadline = min(deadline, batch.phase_started + seconds / 2)
        if batch.outcome == "cancelled":
            # Cancelled on OpenAI's side before any request ran.
            self._move(batch, "cancelling")
            return "cancelling"
        tick = max(seconds / 10, 0.02)
        while True:
            now = min(time.time(), deadline)
            share = 1.0 if seconds <= 0 else min(1.0, (now - batch.phase_started) / seconds)
            # Wall-clock floats carry ~1e-6 s of error: without the epsilon half of 4 can come out as 1.
            due = int(batch.total * share + 1e-3) - batch.run.executed
            if due > 0:
                answered = await anyio.to_thread.run_sync(
                    run_slice, self._input_path(batch), batch.run, due, batch.endpoint,
                    batch.fail_custom_ids_containing, batch.id, self._faults.take_language_faults)
                self.ledger.record_answers(batch.id, answered)
                self._save(batch)
            if batch.run.executed >= batch.total:
                return "finalizing"
            if now >= deadline:  # the share above was taken at the deadline: nothing more runs
                return "expired"
            if await self._wait(batch, min(time.time() + tick, deadline)):
                return "cancelling"

    async def _expire(self, batch: BatchRecord) -> None:
        """The window closed: what ran stays, the rest is reported `batch_expired` (counted failed)."""
        assert batch.run is not None
        batch.expired_unexecuted = await anyio.to_thread.run_sync(write_unexecuted, self._input_path(batch),
                                                                  batch.run, "batch_expired")
        self._publish_results(batch)
        self._move(batch, "expired")

    def _publish_results(self, batch: BatchRecord) -> None:
        # Like OpenAI, a batch without successes (or without errors) has no such file.
        if batch.run is None or batch.output_file_id or batch.error_file_id:
            return
        for path, name in ((batch.run.output_path, "output"), (batch.run.error_path, "error")):
            blob = Path(path)
            if blob.is_file() and blob.stat().st_size > 0:
                file_id = self._files.add(blob, f"{batch.id}_{name}.jsonl", "batch_output").id
                setattr(batch, f"{name}_file_id", file_id)
            else:
                blob.unlink(missing_ok=True)
        self._save(batch)

    async def _finish_cancel(self, batch: BatchRecord) -> None:
        """`cancelling` → `cancelled`: finished requests keep their results, the rest is `batch_cancelled`."""
        if batch.status != "cancelling":
            self._move(batch, "cancelling")
        if batch.run is not None and not (batch.output_file_id or batch.error_file_id):
            await anyio.to_thread.run_sync(write_unexecuted, self._input_path(batch), batch.run,
                                           "batch_cancelled")
            self._publish_results(batch)
        # Cancelling takes a while at OpenAI too; measured from `cancelling_at`, like every phase.
        await asyncio.sleep(max(0.0, batch.phase_started + self._config.finalizing_seconds - time.time()))
        self._move(batch, "cancelled")

    def staging_paths(self) -> set[str]:
        """Result files of batches still running (not yet files of their own)."""
        return {path for b in self._batches.values() if b.run and b.status in ACTIVE_STATUSES
                for path in (b.run.output_path, b.run.error_path)}


def _stuck(batch: BatchRecord) -> bool:
    """A batch the `stuck_finalizing` fault keeps `finalizing` for good."""
    return batch.status == "finalizing" and batch.outcome == "stuck_finalizing"


def batches_router(service: BatchService) -> APIRouter:
    """`/v1/batches` routes over a service."""
    router = APIRouter()

    @router.post("/v1/batches")
    async def create_batch(request: Request) -> JSONResponse:
        return JSONResponse(service.create(await read_json_object(request)).to_object())

    @router.get("/v1/batches")
    async def list_batches(limit: int = 20, after: str | None = None) -> JSONResponse:
        if not 1 <= limit <= 100:
            raise bad_request(f"Invalid 'limit': integer out of range. Expected a value between 1 and 100, "
                              f"but got {limit} instead.", param="limit", code="integer_out_of_range")
        return JSONResponse(service.page(limit, after))

    @router.get("/v1/batches/{batch_id}")
    async def retrieve_batch(batch_id: str) -> JSONResponse:
        return JSONResponse(service.shown(batch_id))

    @router.get("/_standin/batches/{batch_id}/requests")
    async def batch_requests(batch_id: str) -> Response:
        service.get(batch_id)  # OpenAI's 404 for an unknown batch
        # Read and encoded off the event loop: a 50,000-line batch's answers are megabytes of JSON.
        kept = await anyio.to_thread.run_sync(lambda: orjson.dumps(service.ledger.read(batch_id)))
        return Response(kept, media_type="application/json")

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> JSONResponse:
        return JSONResponse(service.cancel(batch_id).to_object())

    return router
