"""What each batch was paid for: its custom_ids once validated and the answer each line got.

The chaos run reads them (`GET /_standin/batches/{id}/requests`) to count each lot's sends and
check LotLens' usage, after the stage has deleted the batch's files. They live on disk only, read
back when asked: held in memory, a 50,000-line batch's took about 22 MB and 100,000 objects for the
stand-in's whole life, so a stand-in up for days (make up, bench, chaos) grew with every batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lotlens_openai_standin.durable import StateStore

_REQUESTS = "batch_requests"
_ANSWERS = "batch_answers"


class BatchLedger:
    """Each batch's requests and answers, one document and one log per batch under `root`."""

    def __init__(self, root: Path) -> None:
        self._store = StateStore(root)
        self._store.mend_logs(_ANSWERS)

    def record_requests(self, batch_id: str, custom_ids: list[str]) -> None:
        """The batch's custom_ids, as validated."""
        self._store.save(_REQUESTS, batch_id, {"batch_id": batch_id, "custom_ids": custom_ids})

    def record_answers(self, batch_id: str, answered: Mapping[str, Any]) -> None:
        """One slice's `line_answer`s by custom_id, appended before the batch record is saved: a kill
        in between runs those lines again on restart, and their answers replace these."""
        self._store.append(_ANSWERS, batch_id, answered)

    def read(self, batch_id: str) -> dict[str, Any]:
        """The batch's custom_ids and answers (both empty before it was validated); a line run
        again after a restart shows its last answer."""
        requests = self._store.load_one(_REQUESTS, batch_id) or {}
        answers: dict[str, Any] = {}
        for answered in self._store.load_log(_ANSWERS, batch_id):
            answers.update(answered)
        return {"batch_id": batch_id, "custom_ids": requests.get("custom_ids", []), "answers": answers}
