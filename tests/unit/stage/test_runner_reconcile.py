"""The reconciler, direct mode as a batches adapter, and files refused as too large (in-memory ports)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lotlens_common.model.errors import (
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.reconcile import reconcile
from tests.unit.stage.conftest import World, lots
from tests.unit.stage.fakes import described


def test_the_reconciler_adopts_an_orphan_batch_and_its_lots_are_not_sent_again(world: World) -> None:
    world.store.add(lots(3))
    orphan = world.orphan("vision-orphan", ["job-1-lot-0", "job-1-lot-1"])
    asyncio.run(reconcile(world.stage))
    assert world.store.shard("vision-orphan").batch_id == orphan  # type: ignore[union-attr]
    world.rounds(2)
    assert len(world.completed()) == 3 and len(world.batches.batches) == 2
    assert sorted(b.lot_ids for b in world.submitted())[0] == ("job-1-lot-0", "job-1-lot-1")


def _created() -> float:
    return REGISTRY.get_sample_value("lotlens_openai_batches_created_total", {"stage": "vision"}) or 0.0


def test_an_orphan_whose_record_the_reconciler_lost_its_lock_for_is_counted_once_by_recovery(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted as adopted though its record returned early (the lock gone while its file was read),
    # then again as created when recovery put it on record: one batch, two counts.
    world.store.add(lots(2))  # both in the orphan: no other batch is made
    orphan = world.orphan("vision-orphan", ["job-1-lot-0", "job-1-lot-1"])
    read = world.batches.iter_file_lines

    def read_while_the_database_restarts(file_id: str) -> AsyncIterator[bytes]:
        world.store.lost.add("vision-orphan")  # the lock's session ended; another instance may take it
        return read(file_id)

    monkeypatch.setattr(world.batches, "iter_file_lines", read_while_the_database_restarts)
    adopted, created = _reconciled("adopted"), _created()
    asyncio.run(reconcile(world.stage))
    assert world.submitted() == []  # not put on record: the lock is gone
    monkeypatch.undo()
    world.store.lost.clear()
    world.rounds()  # recovery finds the shard's batch by its metadata and puts it on record
    assert world.store.shard("vision-orphan").batch_id == orphan  # type: ignore[union-attr]
    counted = _reconciled("adopted") - adopted + _created() - created
    assert counted == 1, f"the orphan counted {counted} times"


def _duplicate_landing_late(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A create answered with a timeout whose batch lands after recovery, past the wait for it,
    built the shard again: the recorded batch and the one that landed late."""
    monkeypatch.setattr(lifecycle, "CREATE_LANDS_S", 0.0)
    world.batches.finish, world.batches.lost_answers = None, [ModelTimeoutError("timed out")]
    world.store.add(lots(2))
    world.rounds()
    [late] = world.batches.unlisted = set(world.batches.batches)
    world.rounds()
    world.batches.unlisted.clear()
    return world.submitted()[0].batch_id, late


def test_a_duplicate_from_a_create_that_landed_late_is_cancelled_by_the_reconciler(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded, late = _duplicate_landing_late(world, monkeypatch)
    asyncio.run(reconcile(world.stage))
    assert recorded != late and world.batches.cancelled == [late]


def _reconciled(action: str) -> float:
    labels = {"stage": "vision", "action": action}
    return REGISTRY.get_sample_value("lotlens_openai_batches_reconciled_total", labels) or 0.0


@pytest.mark.parametrize(("status", "accepted"), [("finalizing", False), ("in_progress", True)])
def test_a_duplicate_is_asked_to_cancel_once_and_counted_only_when_openai_accepts(
        world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, status: str,
        accepted: bool) -> None:
    # A duplicate stuck `finalizing` refuses every cancel (409): it was asked again at every
    # reconcile round (every minute) for as long as the listing showed it, and each refusal was
    # counted as a cancel. One that accepts stays `cancelling` here: asking again changes nothing.
    _, duplicate = _duplicate_landing_late(world, monkeypatch)
    world.batches.uncancellable.add("finalizing")
    world.batches.stuck_cancelling = True
    world.batches.batches[duplicate]["status"] = status
    before = _reconciled("cancelled")
    with caplog.at_level(logging.INFO, logger="lotlens_common.stage"):
        for _ in range(3):
            asyncio.run(reconcile(world.stage))
    assert world.batches.cancel_asks == [duplicate]
    assert _reconciled("cancelled") == before + (1 if accepted else 0)
    said = [r.getMessage() for r in caplog.records if duplicate in r.getMessage()]
    assert len([message for message in said if "not asked again" in message]) == 1, said


def test_a_batch_of_a_job_never_seen_is_left_alone(world: World) -> None:
    world.batches.finish = None
    world.orphan("vision-elsewhere", ["x"])
    world.store.rows.clear()
    asyncio.run(reconcile(world.stage))
    assert world.batches.cancelled == [] and world.store.shards_by_id == {}

def test_an_orphan_whose_input_file_is_gone_is_skipped_with_one_warning(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    # The reconciler reads an orphan's input file to learn its lots; LotLens deletes it when it
    # collects a batch, so after a database restored from a backup the read answered 404: a
    # traceback every minute for as long as the batch was among the newest, never adopted.
    world.store.add(lots(2))
    orphan = world.orphan("vision-orphan", ["job-1-lot-0"])
    world.batches.deleted_files.add(world.batches.batches[orphan]["input_file_id"])
    with caplog.at_level(logging.WARNING):
        asyncio.run(reconcile(world.stage))
        asyncio.run(reconcile(world.stage))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len([r for r in caplog.records if orphan in r.getMessage()]) == 1
    assert world.store.shard("vision-orphan") is None and set(world.store.statuses().values()) == {"waiting"}


def test_an_orphan_whose_lots_are_all_settled_has_its_input_file_read_once(world: World) -> None:
    # Nothing is adopted from it, and the decision was not kept: its whole input file (up to
    # 200 MB) was downloaded again every minute.
    world.store.add(lots(2))
    world.rounds(2)
    assert set(world.store.statuses().values()) == {"done"}
    orphan = world.orphan("vision-orphan", ["job-1-lot-0", "job-1-lot-1"])
    world.batches.batches[orphan]["status"] = "completed"
    asyncio.run(reconcile(world.stage))
    asyncio.run(reconcile(world.stage))
    assert world.batches.reads.count(world.batches.batches[orphan]["input_file_id"]) == 1
    assert world.store.shard("vision-orphan") is None


def test_direct_mode_is_a_batches_adapter_collected_in_the_round_it_is_sent(world: World) -> None:
    async def call(body: Mapping[str, Any]) -> dict[str, Any]:
        text = body["input"][0]["content"][-1]["text"]
        if text.endswith("1"):
            raise ModelRequestError("bad image", 400, "invalid_image_url")
        if text.endswith("2"):
            raise ModelUnavailableError("503")
        return described(text, body)

    world.restart(DirectBatches(call, 4, Path(world.settings.work_dir)))
    world.store.add(lots(3))
    world.rounds(1)
    assert world.completed() == ["job-1-lot-0"]
    # Its only image refused: listed missing, the lot failed with none left (no request sent).
    assert world.failed()["job-1-lot-1"] == "none of the lot's 1 images could be fetched"
    # 503: sent again, in the same round (what became due is sent after each collection)
    assert world.store.statuses()["job-1-lot-2"] == "submitted"

def test_a_file_refused_as_too_large_sends_its_lots_again_in_smaller_files(world: World) -> None:
    world.batches.errors["upload"] = [ModelRequestError(
        "HTTP 400 file_too_large: File is too large.", 400, "file_too_large")]
    world.store.add(lots(4))
    world.rounds()
    assert world.batches.batches == {} and set(world.store.statuses().values()) == {"waiting"}
    limit = world.stage.file_byte_limit()
    assert limit < world.settings.max_batch_bytes
    world.rounds(4)
    assert len(world.completed()) == 4 and len(world.batches.batches) >= 2
    sizes = world.batches.uploaded_bytes
    assert all(sizes[b["input_file_id"]] <= limit for b in world.batches.batches.values())


def test_a_batch_failed_as_too_large_cuts_the_next_files_smaller(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    [batch] = world.batches.batches.values()
    batch["status"], batch["errors"] = "failed", {"data": [{"code": "file_too_large", "message": "big"}]}
    world.rounds()
    assert world.stage.max_file_bytes == world.settings.max_batch_bytes // 2
    # Sent again at once (what became due is sent after each collection), in a smaller file.
    assert set(world.store.statuses().values()) == {"submitted"} and len(world.batches.batches) == 2


def test_batches_built_before_a_cut_and_failed_as_too_large_do_not_cut_again(world: World) -> None:
    # Each in-flight batch that failed as too large halved the limit again: four batches of one
    # size left files at a sixteenth, and the limit never came back. The size they were built at
    # was cut once already.
    world.batches.finish = None
    world.batches.created_at = time.time() - 60  # built a minute ago
    world.store.add(lots(2, job_id="job-1") + lots(2, job_id="job-2"))
    world.rounds()
    assert len(world.batches.batches) == 2
    for batch in world.batches.batches.values():
        batch["status"], batch["errors"] = "failed", {"data": [{"code": "file_too_large", "message": "big"}]}
    world.rounds()
    assert world.stage.max_file_bytes == world.settings.max_batch_bytes // 2


def test_lots_go_one_a_file_when_the_limit_is_cut_below_one_request(world: World) -> None:
    # Halved after each refusal, the limit can fall below one request line: that lot, and every
    # lot queued behind it, waited round after round, for good.
    world.stage.max_file_bytes = 10
    world.store.add(lots(3))
    world.rounds(4)
    assert len(world.completed()) == 3 and len(world.batches.batches) == 3
