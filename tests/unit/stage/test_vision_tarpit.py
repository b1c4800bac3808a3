"""One job's image hosts that never answer must not hold another client's vision batch.

The vision stage checks every image of a shard before it writes the shard's file, and a round
builds its shards one after the other (the oldest job's first). A job whose lots point at a host
that accepts connections and never sends a byte (a tarpit) cost one full timeout per URL,
`image_check_concurrency` at a time: 50,000 lots of 20 such URLs held the vision-batcher for
~43 hours, and every other client's job waited behind it. Here the real image checker (over
loopback) and the stage's own round run against the in-memory store and OpenAI fakes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lotlens_common.events import LotFailed
from lotlens_common.images import RETRY_PAUSES_S
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.record import JOB_KEY
from lotlens_common.stage.submit import flush_due
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_vision_batcher.vision_stage import VisionStage, image_checker
from tests.servers import SilentServer, image_host, silent_server
from tests.unit.stage.fakes import FakeBatches, FakePublisher, FakeStore

TIMEOUT_S, CONCURRENCY = 0.5, 4
# Each tarpit URL is tried three times (a read timeout is a passing failure), 0.5 s and 2 s apart:
# 4 s a URL, 4 at a time, 20 URLs: 20 s of checks before anything else was built.
TARPIT_LOTS, URLS_PER_LOT = 5, 4
PER_URL_S = (len(RETRY_PAUSES_S) + 1) * TIMEOUT_S + sum(RETRY_PAUSES_S)
ALL_TIMED_OUT_S = TARPIT_LOTS * URLS_PER_LOT / CONCURRENCY * PER_URL_S


@pytest.fixture()
def tarpit() -> Iterator[SilentServer]:
    with silent_server() as server:
        yield server


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url


def _settings(monkeypatch: pytest.MonkeyPatch) -> VisionBatcherSettings:
    monkeypatch.setenv("LOTLENS_ALLOW_LOOPBACK_URLS", "true")
    monkeypatch.setenv("LOTLENS_IMAGE_CHECK_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("LOTLENS_IMAGE_CHECK_CONCURRENCY", str(CONCURRENCY))
    return VisionBatcherSettings()


def _job(job_id: str, client_id: str, urls_of: list[tuple[str, ...]]) -> list[LotWork[VisionWork]]:
    return [LotWork(job_id, f"{job_id}-lot-{i}", client_id, len(urls_of), 0,
                    VisionWork(additional_info="Camry", image_urls=urls, languages=("en",)))
            for i, urls in enumerate(urls_of)]


def test_a_job_on_a_tarpit_host_does_not_hold_another_clients_batch_until_every_url_timed_out(
        tmp_path: Path, tarpit: SilentServer, images: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store, batches, publisher = FakeStore(), FakeBatches(), FakePublisher()
    spec = VisionStage("vision", ModelSettings(), image_checker(_settings(monkeypatch)))
    stage = Stage(spec, store, batches, publisher,
                  StageSettings(window_s=0.0, max_attempts=2, work_dir=str(tmp_path)))
    dead = f"http://127.0.0.1:{tarpit.port}"
    # The attacker's job arrived first: the round plans it first.
    store.add(_job("job-tarpit", "client-a", [tuple(f"{dead}/{lot}-{i}.png" for i in range(URLS_PER_LOT))
                                              for lot in range(TARPIT_LOTS)]))
    store.add(_job("job-working", "client-b", [(f"{images}/front.png",)]))
    created_at: dict[str, float] = {}
    create = batches.create_batch

    async def timed_create(input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        created_at[metadata[JOB_KEY]] = time.monotonic()
        return await create(input_file_id, metadata)

    monkeypatch.setattr(batches, "create_batch", timed_create)
    started = time.monotonic()
    asyncio.run(flush_due(stage))

    assert "job-tarpit" not in created_at, "no lot of the tarpit job has a usable image"
    waited_s = created_at["job-working"] - started
    assert waited_s < ALL_TIMED_OUT_S / 2, (
        f"client B's batch was created {waited_s:.1f} s into the round, after {len(tarpit.accepted)} "
        f"connections to the tarpit (every tarpit URL timed out by {ALL_TIMED_OUT_S:.1f} s)")
    # The first tries (one a check place) got no answer: the host was down from then on.
    assert len(tarpit.accepted) <= CONCURRENCY
    # The tarpit job's lots end as today's timeouts ended them, only sooner.
    failed = {event.lot_id: event.reason for event in publisher.events if isinstance(event, LotFailed)}
    assert failed == {f"job-tarpit-lot-{lot}": f"none of the lot's {URLS_PER_LOT} images could be fetched"
                      for lot in range(TARPIT_LOTS)}
