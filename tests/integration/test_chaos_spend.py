"""The chaos invariant on what OpenAI was paid for, fed crafted batches at a real stand-in: the
same lots in two batches at once under two shard ids (each shard counted once) are a double spend,
seen even after the stage deleted the input files, and so is a lot sent again after a batch answered
it with a 200; a lot sent again once its batch ended without an answer (the stage's retries) and
batches of distinct lots pass."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.spend import check_batches
from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.vision import vision_request_body
from lotlens_common.stage.record import batch_metadata
from tests.conftest import new_id
from tests.standin import Standin, serve_standin

pytestmark = pytest.mark.integration

KEY = "sk-chaos-spend"
FINISHED = ("completed", "failed", "expired", "cancelled")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    # Phases of a second: two batches created one after the other are alive at once.
    with serve_standin(tmp_path / "standin", api_key=KEY, validating_seconds=1.0,
                       in_progress_seconds=1.0) as running:
        yield running


def _send(standin: Standin, tmp_path: Path, job_id: str, shards: dict[str, list[str]], *,
          at_once: bool) -> None:
    """One vision batch per shard with its lots, each run to its end (all created first when
    `at_once`, else each created once the one before ended), then its input file deleted."""

    async def main() -> None:
        async with make_openai_client(KEY, standin.base_url, timeout=10) as client:
            batches = OpenAIBatches(client)
            running: list[tuple[str, str]] = []
            for shard_id, lot_ids in shards.items():
                path = tmp_path / f"{shard_id}.jsonl"
                path.write_bytes(b"".join(batch_line(lot, vision_request_body("Dent", ["https://img.example/1.jpg"],
                                                                               ModelSettings()))
                                          for lot in lot_ids))
                file_id = await batches.upload_batch_file(path)
                batch = await batches.create_batch(file_id, batch_metadata("vision", job_id, shard_id, 1))
                running.append((batch["id"], file_id))
                if not at_once:
                    await _ended(batches, running.pop())
            for sent in running:
                await _ended(batches, sent)

    asyncio.run(main())


async def _ended(batches: OpenAIBatches, sent: tuple[str, str]) -> None:
    batch_id, file_id = sent
    while (await batches.retrieve_batch(batch_id))["status"] not in FINISHED:  # noqa: ASYNC110 (polling an API)
        await asyncio.sleep(0.05)
    await batches.delete_file(file_id)


def test_the_same_lots_in_two_batches_at_once_under_two_shard_ids_are_a_double_spend(
        standin: Standin, tmp_path: Path) -> None:
    job_id = new_id("job-")
    _send(standin, tmp_path, job_id, {"shard-a": ["lot-1", "lot-2"], "shard-b": ["lot-2", "lot-1"]},
          at_once=True)
    found = check_batches(standin.base_url.removesuffix("/v1"), KEY)
    assert found == [f"lot {lot} of job {job_id} was in 2 batches at once at the vision stage (double spend)"
                     for lot in ("lot-1", "lot-2")]


def test_a_lot_sent_again_after_a_batch_answered_it_with_a_200_is_a_double_spend(
        standin: Standin, tmp_path: Path) -> None:
    # The stage had lot-1's answer from shard-a's batch: paying for it again in shard-b's is a loss
    # (the check by lives alone let it pass, as it ended before the second began).
    job_id = new_id("job-")
    _send(standin, tmp_path, job_id, {"shard-a": ["lot-1", "lot-2"], "shard-b": ["lot-1"]}, at_once=False)
    found = check_batches(standin.base_url.removesuffix("/v1"), KEY)
    assert len(found) == 1
    assert found[0].startswith(f"lot lot-1 of job {job_id} was sent again at the vision stage in batch ")
    assert found[0].endswith("answered it with a usable 200 (double spend)")


@pytest.mark.parametrize("fault", [{"fail_custom_ids_containing": "lot-1"},
                                   {"batch_outcome": "cancelled", "batch_outcome_count": 1}],
                         ids=["failed line", "batch cancelled before it ran"])
def test_a_lot_sent_again_once_its_batch_ended_without_its_answer_passes(
        standin: Standin, tmp_path: Path, fault: dict[str, object]) -> None:
    # A retry: the first batch answered lot-1 with a 500 line, or ended before running it.
    job_id = new_id("job-")
    standin.faults(**fault)
    _send(standin, tmp_path, job_id, {"shard-a": ["lot-1", "lot-2"]}, at_once=False)
    standin.faults(fail_custom_ids_containing=None, batch_outcome=None)
    _send(standin, tmp_path, job_id, {"shard-b": ["lot-1"]}, at_once=False)
    assert check_batches(standin.base_url.removesuffix("/v1"), KEY) == []


def test_batches_of_distinct_lots_pass(standin: Standin, tmp_path: Path) -> None:
    _send(standin, tmp_path, new_id("job-"), {"shard-a": ["lot-1", "lot-2"], "shard-b": ["lot-3"]},
          at_once=True)
    assert check_batches(standin.base_url.removesuffix("/v1"), KEY) == []
