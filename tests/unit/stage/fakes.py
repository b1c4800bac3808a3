"""In-memory stand-ins for the stage's ports: a work store and a batches API (the publisher's is
`fake_publisher`).

They record what happened, so the tests read the effects (events published, batches created or
cancelled, lot statuses) instead of the calls.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from lotlens_common.model.errors import ModelError, ModelRequestError
from lotlens_common.stage.core.rule import WaitingJob
from lotlens_common.stage.figures import StageFigures
from lotlens_common.stage.ports import Closing, Fit, Settlement, Shard
from lotlens_common.stage.work import LotWork, VisionWork
from tests.unit.stage.fake_quota import QueueHoldRow, QuotaRows


@dataclass
class Row:
    """One lot's row."""

    lot: LotWork[VisionWork]
    status: str = "waiting"
    shard_id: str | None = None
    seq: int = 0
    last_error: str | None = None


class FakeStore(QueueHoldRow, QuotaRows):
    """The work store in dicts; `locks` holds keys some other process has."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, Row] = {}
        self.shards_by_id: dict[str, Shard] = {}
        self.tokens: dict[str, int] = {}
        self.cancelled: set[str] = set()
        self.locks: set[str] = set()
        self.lost: set[str] = set()  # locks a database restart took away from their holder
        self.create_asked_at: dict[str, float] = {}  # shard id -> when a create was asked (unknown outcome)
        self.db_clock_ahead_s = 0.0  # of the pod's; a create's age is the database's, on its clock
        self.collected_from_sent: list[bool] = []  # per collection: its works were the lots sent
        self._seq = itertools.count()

    def add(self, lots: Sequence[LotWork[VisionWork]]) -> None:
        """Lots arrive (what the intake handler does)."""
        for lot in lots:
            self.rows.setdefault(lot.lot_id, Row(lot, seq=next(self._seq)))

    def statuses(self) -> dict[str, str]:
        """lot id -> status; one its collected shard still holds is done (`postgres.lot_states`)."""
        collected = {s.shard_id for s in self.shards_by_id.values() if s.status == "collected"}
        return {lot_id: "done" if row.status == "submitted" and row.shard_id in collected else row.status
                for lot_id, row in self.rows.items()}

    def waiting_jobs(self, cancelled_only: bool = False) -> list[WaitingJob]:
        jobs: dict[str, list[Row]] = {}
        for row in self.rows.values():
            jobs.setdefault(row.lot.job_id, []).append(row)
        return [WaitingJob(job_id, rows[0].lot.client_id, sum(r.status == "waiting" for r in rows), len(rows),
                           max(r.lot.total_lots for r in rows), datetime.min, 0, job_id in self.cancelled)
                for job_id, rows in jobs.items() if any(r.status == "waiting" for r in rows)
                and (job_id in self.cancelled or not cancelled_only)]

    def tokens_enqueued(self) -> int:
        return sum(self.tokens[s.shard_id] for s in self.shards_by_id.values()
                   if s.status in ("building", "submitted"))

    def _take(self, rows: list[Row], shard_id: str) -> list[LotWork[VisionWork]]:
        for row in rows:
            row.lot = replace(row.lot, attempts=row.lot.attempts + 1)
            row.status, row.shard_id = "submitted", shard_id
        return [row.lot for row in rows]

    def _new_shard(self, shard_id: str, lots: list[LotWork[VisionWork]], tokens: int) -> None:
        self.shards_by_id[shard_id] = Shard(shard_id, lots[0].job_id, lots[0].client_id,
                                            max(lot.attempts for lot in lots), "building", None, None,
                                            created_at=time.time())
        self.tokens[shard_id] = tokens

    def claim(self, job_id: str, shard_id: str, limit: int,
              fit: Fit[VisionWork]) -> list[LotWork[VisionWork]]:
        rows = sorted((r for r in self.rows.values() if r.lot.job_id == job_id and r.status == "waiting"),
                      key=lambda r: r.seq)[:limit]
        keep, tokens = fit([row.lot for row in rows])
        lots = self._take(rows[:keep], shard_id)
        if lots:
            self._new_shard(shard_id, lots, tokens)
        return lots

    def claim_named(self, job_id: str, lot_ids: Sequence[str], shard_id: str,
                    tokens: Callable[[list[LotWork[VisionWork]]], int]) -> list[LotWork[VisionWork]]:
        rows = [self.rows[i] for i in lot_ids if i in self.rows and self.rows[i].status == "waiting"]
        lots = self._take(rows, shard_id)
        if lots:
            self._new_shard(shard_id, lots, tokens(lots))
        return lots

    @contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        if key in self.locks:
            yield False
            return
        self.locks.add(key)
        try:
            yield True
        finally:
            self.locks.discard(key)

    def holds(self, key: str) -> bool:
        return key in self.locks and key not in self.lost

    def shards(self, status: str) -> list[Shard]:
        return [self._aged(s) for s in self.shards_by_id.values() if s.status == status]

    def shard(self, shard_id: str) -> Shard | None:
        found = self.shards_by_id.get(shard_id)
        return None if found is None else self._aged(found)

    def shard_lots(self, shard_id: str, sent: Mapping[str, LotWork[VisionWork]] | None = None
                   ) -> list[LotWork[VisionWork]]:
        held = [r.lot for r in self.rows.values() if r.shard_id == shard_id and r.status == "submitted"]
        self.collected_from_sent.append(sent is not None and all(lot.lot_id in sent for lot in held))
        return [sent[lot.lot_id] for lot in held] if self.collected_from_sent[-1] and sent else held

    def shard_trace(self, shard_id: str) -> dict[str, str]:
        return next((r.lot.work.trace for r in self.rows.values() if r.shard_id == shard_id), {})

    def save_prepared(self, job_id: str, settled: Sequence[str],
                      changed: Sequence[LotWork[VisionWork]]) -> None:
        for lot_id in settled:
            self.rows[lot_id].status = "done"
        for lot in changed:
            self.rows[lot.lot_id].lot = replace(self.rows[lot.lot_id].lot, work=lot.work)

    def requeue(self, job_id: str, lot_ids: Sequence[str], reason: str | None = None,
                sent: bool = True) -> None:
        for lot_id in lot_ids:
            row = self.rows[lot_id]
            if not sent:  # the claim counted it
                row.lot = replace(row.lot, attempts=row.lot.attempts - 1)
            row.status, row.shard_id, row.last_error, row.seq = "waiting", None, reason, next(self._seq)

    def _now(self) -> float:
        return time.time() + self.db_clock_ahead_s

    def note_create_asked(self, shard_id: str, asked: bool) -> None:
        # Stamped and aged by the store's clock, as by the database's now().
        if asked:
            self.create_asked_at[shard_id] = self._now()
        else:
            self.create_asked_at.pop(shard_id, None)

    def _aged(self, shard: Shard) -> Shard:
        asked = self.create_asked_at.get(shard.shard_id)
        return replace(shard, create_asked_age_s=None if asked is None else self._now() - asked)

    def record_batch(self, shard_id: str, batch_id: str, lot_count: int, created_at: float | None,
                     tokens: int, batch_status: str | None = None) -> bool:
        if self.shards_by_id[shard_id].status != "building":
            return False
        self.shards_by_id[shard_id] = replace(self.shards_by_id[shard_id], batch_id=batch_id,
                                              status="submitted", batch_created_at=created_at,
                                              batch_status=batch_status)
        self.tokens[shard_id] = tokens
        return True

    def note_batch_status(self, shard_id: str, batch_status: str) -> None:
        if self.shards_by_id[shard_id].status == "submitted":
            self.shards_by_id[shard_id] = replace(self.shards_by_id[shard_id], batch_status=batch_status)

    def note_unreadable(self, shard_id: str, reason: str | None) -> None:
        if self.shards_by_id[shard_id].status == "submitted":
            release = self.shards_by_id[shard_id].release if reason is not None else None
            self.shards_by_id[shard_id] = replace(self.shards_by_id[shard_id], unreadable=reason,
                                                  release=release)

    def close_shard(self, shard_id: str, status: str, batch_status: str | None) -> None:
        self.shards_by_id[shard_id] = replace(self.shards_by_id[shard_id], status=status,
                                              batch_status=batch_status)
        self.tokens[shard_id] = 0

    def settle(self, job_id: str, settlement: Settlement, closing: Closing | None = None) -> None:
        # As PostgreSQL's: the last chunk's done lots are settled by closing their shard, unwritten.
        done = settlement.done if closing is None else []
        for status, lot_ids in (("done", done), ("cancelled", settlement.cancelled)):
            for lot_id in lot_ids:
                self.rows[lot_id].status = status
        for reason, lot_ids in settlement.failed.items():
            for lot_id in lot_ids:
                self.rows[lot_id].status, self.rows[lot_id].last_error = "failed", reason
        for reason, lot_ids in settlement.again.items():
            self.requeue(job_id, lot_ids, reason)
        for reason, lot_ids in settlement.unsent.items():
            self.requeue(job_id, lot_ids, reason, sent=False)
        for lot in settlement.rework:
            self.rows[lot.lot_id].lot = replace(self.rows[lot.lot_id].lot, work=lot.work)
        if closing is not None:
            self.close_shard(closing.shard_id, "collected", closing.batch_status)

    def cancelled_jobs(self, job_ids: Sequence[str]) -> set[str]:
        return self.cancelled & set(job_ids)

    def known_batches(self, batch_ids: Sequence[str]) -> set[str]:
        return {s.batch_id for s in self.shards_by_id.values() if s.batch_id} & set(batch_ids)

    def job_known(self, job_id: str) -> bool:
        return any(r.lot.job_id == job_id for r in self.rows.values())

    def lots_waiting(self) -> int:
        building = {s.shard_id for s in self.shards_by_id.values() if s.status == "building"}
        return sum(r.status == "waiting" or (r.status == "submitted" and r.shard_id in building)
                   for r in self.rows.values())

    def oldest_submitted_age_s(self) -> float:
        created = [s.batch_created_at or s.created_at for s in self.shards("submitted")]
        return time.time() - min(created) if created else 0.0

    def figures(self) -> StageFigures:
        submitted = self.shards("submitted")
        paused = any(s.unreadable is not None or s.release is not None for s in submitted)
        read = [s for s in submitted if s.unreadable is None]  # a batch that cannot be read is in none
        batches = Counter(s.batch_status for s in read if s.batch_status is not None)
        return StageFigures(self.tokens_enqueued(), self.oldest_submitted_age_s(), self.queue_held(), batches,
                            paused or self.quota_pause() is not None)

    def prune(self, settled_before: datetime) -> int:
        return 0


# What a batch line answers for a request: a body, or an error line's (status, code[, message]).
Answer = Callable[[str, Mapping[str, Any]], dict[str, Any] | tuple[int, str] | tuple[int, str, str]]


def described(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses body describing the lot."""
    return {"status": "completed", "output": [{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": f"described {custom_id}"}]}]}


@dataclass
class FakeBatches:
    """A batches API whose batches finish (or not) as the test says.

    `finish`: the status a batch takes when next read (None: it keeps running); `answer` decides
    each line; `done_lines` limits how many lines are answered before an expiry or a cancel;
    `errors` raises a ModelError from the named method once per entry (before it does anything);
    `lost_answers` answers a create that made its batch with an error (a timeout, a 5xx: the batch
    may exist after those, as the README says), once per entry.
    """

    creates_land_late = True  # as OpenAI's (`lost_answers`)
    answer: Answer = described
    finish: str | None = "completed"
    done_lines: int | None = None
    created_at: float = 2_000_000_000.0
    errors: dict[str, list[ModelError]] = field(default_factory=dict)
    files: dict[str, list[bytes]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    # Files OpenAI answers 404 for (deleted in the dashboard, or past their 30 days).
    deleted_files: set[str] = field(default_factory=set)
    # Files OpenAI refuses to this key (403: another project's, or a key that lost the permission).
    refused_files: set[str] = field(default_factory=set)
    lost_answers: list[ModelError] = field(default_factory=list)
    # Batches made but not shown yet, by the listing or by id (a create that lands late).
    unlisted: set[str] = field(default_factory=set)
    # A cancelled batch stays `cancelling` (OpenAI says up to 10 minutes; one was seen for longer).
    stuck_cancelling: bool = False
    # A `failed` batch's `errors.data`: refused whole, it answers no request (no output, no error file).
    failure_errors: list[dict[str, Any]] = field(default_factory=list)
    # Statuses a cancel is refused in, with OpenAI's 409 (a test adds `finalizing` for a stuck batch).
    uncancellable: set[str] = field(default_factory=lambda: {"completed", "failed", "expired"})
    cancel_asks: list[str] = field(default_factory=list)  # every cancel asked, refused or not
    # The batch finishes so just before a cancel reaches it (after the poll that saw it running).
    finish_before_cancel: str | None = None
    reads: list[str] = field(default_factory=list)  # every file whose lines were read
    deleted: list[str] = field(default_factory=list)
    uploaded_bytes: dict[str, int] = field(default_factory=dict)  # each upload's size, kept after deletion
    page_size: int = 100  # batches a page of the listing holds (OpenAI's largest `limit`)
    pages_listed: int = 0  # pages of the listing read
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def _raise(self, method: str) -> None:
        if self.errors.get(method):
            raise self.errors[method].pop(0)

    async def upload_batch_file(self, path: Path) -> str:
        self._raise("upload")
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = path.read_bytes().splitlines()  # noqa: ASYNC240 (a test's small file)
        self.uploaded_bytes[file_id] = sum(map(len, self.files[file_id]))
        return file_id

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        self._raise("create")
        batch_id = f"batch-{next(self._ids)}"
        self.batches[batch_id] = {"id": batch_id, "status": "validating", "metadata": dict(metadata),
                                  "input_file_id": input_file_id, "created_at": self.created_at}
        if self.lost_answers:
            raise self.lost_answers.pop(0)
        return dict(self.batches[batch_id])

    def _run(self, batch: dict[str, Any], status: str) -> None:
        if status == "failed":
            batch["status"], batch["errors"] = status, {"object": "list", "data": list(self.failure_errors)}
            return
        lines = [orjson.loads(raw) for raw in self.files[batch["input_file_id"]]]
        answered = lines if status == "completed" else lines[:self.done_lines or 0]
        out, err = [], []
        for line in answered:
            answer = self.answer(line["custom_id"], line["body"])
            if isinstance(answer, tuple):
                message = answer[2] if len(answer) > 2 else "no"
                err.append({"custom_id": line["custom_id"], "response": {
                    "status_code": answer[0], "body": {"error": {"code": answer[1], "message": message}}}})
            else:
                out.append({"custom_id": line["custom_id"], "response": {"status_code": 200, "body": answer}})
        for line in lines[len(answered):]:
            code = "batch_expired" if status == "expired" else "batch_cancelled"
            err.append({"custom_id": line["custom_id"], "error": {"code": code, "message": status}})
        for key, found in (("output_file_id", out), ("error_file_id", err)):
            if found:
                batch[key] = f"{batch['id']}-{key}"
                self.files[batch[key]] = [orjson.dumps(line) for line in found]
        batch["status"] = status

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        self._raise("retrieve")
        if batch_id not in self.batches or batch_id in self.unlisted:  # e.g. another project's
            raise ModelRequestError(f"HTTP 404 invalid_request_error: No batch found with id "
                                    f"'{batch_id}'.", 404)
        batch = self.batches[batch_id]
        if batch["status"] == "cancelling" and not self.stuck_cancelling:
            self._run(batch, "cancelled")
        elif batch["status"] in ("validating", "in_progress") and self.finish:
            self._run(batch, self.finish)
        return dict(batch)

    def _listed(self, metadata_match: Mapping[str, str], limit_pages: int) -> Iterator[dict[str, Any]]:
        """The matching batches, newest first, a page of `page_size` read at a time (counted)."""
        self._raise("list")
        newest_first = list(reversed(self.batches.values()))
        for start in range(0, min(max(len(newest_first), 1), limit_pages * self.page_size), self.page_size):
            self.pages_listed += 1
            for batch in newest_first[start:start + self.page_size]:
                shown = batch["id"] not in self.unlisted
                if shown and all(batch["metadata"].get(k) == v for k, v in metadata_match.items()):
                    yield dict(batch)

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        return list(self._listed(metadata_match, limit_pages))

    async def find_batch(self, metadata_match: Mapping[str, str],
                         limit_pages: int = 50) -> dict[str, Any] | None:
        return next(self._listed(metadata_match, limit_pages), None)

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        self._raise("cancel")
        self.cancel_asks.append(batch_id)
        if self.finish_before_cancel:
            self._run(self.batches[batch_id], self.finish_before_cancel)
        status = self.batches[batch_id]["status"]
        if status in self.uncancellable:  # OpenAI's answer, word for word
            raise ModelRequestError(f"HTTP 409 invalid_request_error: Cannot cancel a batch with status "
                                    f"'{status}'.", 409)
        self.cancelled.append(batch_id)
        self.batches[batch_id].update(status="cancelling", cancelling_at=int(time.time()))
        return dict(self.batches[batch_id])

    async def delete_file(self, file_id: str) -> None:
        self._raise("delete")
        if file_id not in self.files or file_id in self.deleted_files:  # as the API answers then
            raise ModelRequestError(f"No such File object: {file_id}", status_code=404)
        del self.files[file_id]
        self.deleted.append(file_id)

    async def iter_file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        self.reads.append(file_id)
        if file_id in self.deleted_files:
            raise ModelRequestError(f"HTTP 404 invalid_request_error: No such File object: {file_id}", 404)
        if file_id in self.refused_files:
            raise ModelRequestError(f"HTTP 403 permission_denied: not allowed to read {file_id}", 403)
        for line in self.files[file_id]:
            yield line
