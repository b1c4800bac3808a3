"""The Batch API: batches move through their statuses in background tasks, on wall-clock time."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lotlens_openai_standin.api_errors import bad_request, not_found
from lotlens_openai_standin.batch_input import batch_error, validate_input_file
from lotlens_openai_standin.batch_record import ACTIVE_STATUSES, BatchRecord, check_create_params
from lotlens_openai_standin.batch_run import RunPlan, run_batch
from lotlens_openai_standin.config import StandinConfig
from lotlens_openai_standin.durable import StateStore
from lotlens_openai_standin.faults import Faults, Stats
from lotlens_openai_standin.files import FileStore
from lotlens_openai_standin.ids import new_id, unix_now
from lotlens_openai_standin.request_json import read_json_object


class BatchService:
    """Creates, lists and cancels batches, and drives each one to a terminal status."""

    def __init__(self, config: StandinConfig, files: FileStore, faults: Faults, stats: Stats,
                 state: StateStore) -> None:
        self._config = config
        self._files = files
        self._faults = faults
        self._stats = stats
        self._state = state
        batches = (BatchRecord.from_state(saved) for saved in state.load("batches"))
        self._batches: dict[str, BatchRecord] = {batch.id: batch for batch in batches}
        self._sequence = itertools.count(max((b.sequence for b in self._batches.values()), default=-1) + 1)
        self._tasks: set[asyncio.Task[None]] = set()

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
                            fail_custom_ids_containing=self._faults.fail_custom_ids_containing)
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
        """Start cancelling a batch that is still running."""
        batch = self.get(batch_id)
        if batch.status in ("cancelling", "cancelled"):
            return batch
        if batch.status not in ("validating", "in_progress", "finalizing"):
            raise bad_request(f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id",
                              code="invalid_batch_status")
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
        # Measured from the phase's start, so a restarted stand-in keeps the batch's pace.
        remaining = max(0.0, batch.phase_started + phase_seconds - time.time())
        try:
            await asyncio.wait_for(batch.cancel_requested.wait(), timeout=remaining)
        except TimeoutError:
            return batch.cancel_requested.is_set()
        return True

    def _enqueued_tokens(self, model: str) -> int:
        return sum(b.estimated_tokens for b in self._batches.values()
                   if b.model == model and b.status in ACTIVE_STATUSES)

    async def _drive(self, batch: BatchRecord) -> None:
        # Each block resumes its status, so a batch reloaded after a restart continues where it was.
        if batch.status == "validating":
            if await self._pause(batch, self._config.validating_seconds):
                await self._finish_cancel(batch)
                return
            if not await self._validate(batch):
                return
        if batch.status == "in_progress":
            if await self._pause(batch, self._config.in_progress_seconds):
                await self._finish_cancel(batch)
                return
            if batch.outcome == "cancelled":
                self._move(batch, "cancelling")
                await self._finish_cancel(batch)
                return
            if batch.outcome == "expired":
                await self._run(batch, RunPlan(batch.endpoint, batch.total // 2, "batch_expired",
                                               batch.fail_custom_ids_containing))
                self._move(batch, "expired")
                return
            self._move(batch, "finalizing")
        if batch.status == "finalizing":
            if not batch.ran:
                await self._run(batch, RunPlan(batch.endpoint, None,
                                               fail_custom_ids_containing=batch.fail_custom_ids_containing))
            if not await self._pause(batch, self._config.finalizing_seconds):
                self._move(batch, "completed")
                return
        await self._finish_cancel(batch)

    async def _validate(self, batch: BatchRecord) -> bool:
        path = self._files.get(batch.input_file_id).path
        summary = await anyio.to_thread.run_sync(validate_input_file, path, batch.endpoint)
        batch.model, batch.estimated_tokens = summary.model, summary.estimated_tokens
        errors = summary.errors
        limit = self._config.enqueued_token_limit
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
            batch.errors = errors
            self._move(batch, "failed")
            return False
        batch.total = summary.total
        self._move(batch, "in_progress")
        return True

    async def _run(self, batch: BatchRecord, plan: RunPlan) -> None:
        source = self._files.get(batch.input_file_id).path
        output_path, error_path = self._files.new_path(), self._files.new_path()
        result = await anyio.to_thread.run_sync(run_batch, source, plan, output_path, error_path)
        batch.completed = result.completed
        # Expired requests count as failed; cancelled ones count as neither.
        batch.failed = result.failed + (result.unexecuted if plan.unexecuted_code == "batch_expired" else 0)
        batch.usage = {
            "input_tokens": result.input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": result.output_tokens,
            "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens},
            "total_tokens": result.input_tokens + result.output_tokens,
        }
        batch.output_file_id = self._register(output_path, f"{batch.id}_output.jsonl")
        batch.error_file_id = self._register(error_path, f"{batch.id}_error.jsonl")
        batch.ran = True
        self._save(batch)

    def _register(self, path: Path, filename: str) -> str | None:
        # Like OpenAI, a batch without successes (or without errors) has no such file.
        if path.stat().st_size == 0:
            path.unlink(missing_ok=True)
            return None
        return self._files.add(path, filename, "batch_output").id

    async def _finish_cancel(self, batch: BatchRecord) -> None:
        """`cancelling` → `cancelled`; a validated batch that has not run reports its requests unexecuted."""
        if batch.status != "cancelling":
            self._move(batch, "cancelling")
        if batch.total and not batch.ran:
            await self._run(batch, RunPlan(batch.endpoint, 0, "batch_cancelled"))
        # Cancelling takes a while at OpenAI too; measured from `cancelling_at`, like every phase.
        await asyncio.sleep(max(0.0, batch.phase_started + self._config.finalizing_seconds - time.time()))
        self._move(batch, "cancelled")


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
        return JSONResponse(service.get(batch_id).to_object())

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> JSONResponse:
        return JSONResponse(service.cancel(batch_id).to_object())

    return router
