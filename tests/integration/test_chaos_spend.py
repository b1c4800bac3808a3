"""The chaos invariant on what OpenAI was paid for, fed crafted batches at a real stand-in: the
same lots sent in two batches under two shard ids (each shard counted once) are a double spend,
seen even after the stage deleted the input files; batches of distinct lots pass."""

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
    with serve_standin(tmp_path / "standin", api_key=KEY) as running:
        yield running


def _send(standin: Standin, tmp_path: Path, job_id: str, shards: dict[str, list[str]]) -> None:
    """One vision batch per shard with its lots, each run to its end, then its input file deleted."""

    async def main() -> None:
        async with make_openai_client(KEY, standin.base_url, timeout=10) as client:
            batches = OpenAIBatches(client)
            for shard_id, lot_ids in shards.items():
                path = tmp_path / f"{shard_id}.jsonl"
                path.write_bytes(b"".join(batch_line(lot, vision_request_body("Dent", ["https://img.example/1.jpg"],
                                                                               ModelSettings()))
                                          for lot in lot_ids))
                file_id = await batches.upload_batch_file(path)
                batch = await batches.create_batch(file_id, batch_metadata("vision", job_id, shard_id, 1))
                while batch["status"] not in FINISHED:
                    await asyncio.sleep(0.05)
                    batch = await batches.retrieve_batch(batch["id"])
                await batches.delete_file(file_id)

    asyncio.run(main())


def test_the_same_lots_sent_under_two_shard_ids_are_a_double_spend(standin: Standin, tmp_path: Path) -> None:
    job_id = new_id("job-")
    _send(standin, tmp_path, job_id, {"shard-a": ["lot-1", "lot-2"], "shard-b": ["lot-2", "lot-1"]})
    found = check_batches(standin.base_url.removesuffix("/v1"), KEY)
    assert found == [f"lot {lot} of job {job_id} sent 2 times at the vision stage, attempt 1 (double spend)"
                     for lot in ("lot-1", "lot-2")]


def test_batches_of_distinct_lots_pass(standin: Standin, tmp_path: Path) -> None:
    _send(standin, tmp_path, new_id("job-"), {"shard-a": ["lot-1", "lot-2"], "shard-b": ["lot-3"]})
    assert check_batches(standin.base_url.removesuffix("/v1"), KEY) == []
