"""What the shard-release tests share: a job's lots sent as a batch in an OpenAI project that is
then gone (the stage's key sees another project), a vision-batcher process on the new project,
`lotlens-admin shards` run as the operator runs it, and the process's pause gauge."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotSubmitted
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.submit import flush_due
from lotlens_common.tables import stage_shards
from lotlens_vision_batcher import handlers as vision_handlers
from tests.conftest import ROOT, Infra
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.stage.helpers import runtime, stage_env
from tests.polling import wait_for
from tests.standin import Standin, serve_standin

# The stage process's start, a Kafka consumer join and a few poll rounds on two busy cores.
SETTLED_S = 120.0


def lots_in(engine: Engine, job_id: str, images: str, count: int) -> None:
    """The job's lots arrive at the vision stage, their images on the test's image host."""
    vision_handlers.handle(engine, None, [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id=f"lot-{i}", seq=i, total_lots=count, additional_info=f"car {i}",
        image_urls=(f"{images}/{job_id}-{i}.png",), languages=("en",))) for i in range(count)])


def sent_in_a_project_now_gone(settings: ServiceSettings, engine: Engine, tmp_path: Path, job_id: str,
                               images: str, count: int) -> str:
    """The job's lots sent as one batch in an OpenAI project, still running when the project (the
    stand-in) goes away; the shard's id."""
    with serve_standin(tmp_path / "old-project", in_progress_seconds=3600) as old_project:
        lots_in(engine, job_id, images, count)

        async def send() -> None:
            async with runtime(settings, engine, old_project) as rt:
                assert len(await flush_due(rt)) == 1

        asyncio.run(send())
    with engine.connect() as conn:
        return str(conn.execute(select(stage_shards.c.shard_id).where(
            stage_shards.c.job_id == job_id, stage_shards.c.status == "submitted")).scalar_one())


def start_stage(settings: ServiceSettings, standin: Standin, metrics_port: int,
                **extra: str) -> subprocess.Popen[bytes]:
    """A vision-batcher process whose key is the new project's (the stand-in's)."""
    env = stage_env(settings, standin, LOTLENS_METRICS_PORT=str(metrics_port), **extra)
    return subprocess.Popen([sys.executable, "-m", "lotlens_vision_batcher"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def admin(infra: Infra, settings: ServiceSettings, *argv: str) -> subprocess.CompletedProcess[str]:
    """`lotlens-admin` as its own process, on the test's database and topics."""
    return run_admin(admin_env(infra.kafka_bootstrap, settings.database.database_url, settings.topics), *argv)


def paused(infra: Infra, settings: ServiceSettings) -> list[dict[str, Any]]:
    """`lotlens-admin shards paused --json`."""
    shown = admin(infra, settings, "shards", "paused", "--json")
    assert shown.returncode == 0, f"`shards paused` failed ({shown.returncode}): {shown.stderr}"
    return list(json.loads(shown.stdout))


def wait_paused(infra: Infra, settings: ServiceSettings, shard_id: str) -> dict[str, Any]:
    """The shard, once `shards paused` lists it."""
    def listed() -> list[dict[str, Any]]:
        return [shard for shard in paused(infra, settings) if shard["shard_id"] == shard_id]

    return wait_for(listed, f"shard {shard_id} listed as holding the stage paused", timeout_s=SETTLED_S,
                    every_s=0.5)[0]


def paused_gauge(metrics_port: int) -> float | None:
    """The process's `lotlens_stage_paused{stage="vision"}` (None: not served yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('lotlens_stage_paused{stage="vision"}'):
            return float(line.split()[-1])
    return None


def wait_gauge(metrics_port: int, value: float) -> None:
    """Until the process's pause gauge reads `value`."""
    wait_for(lambda: paused_gauge(metrics_port) == value,
             lambda: f"lotlens_stage_paused to read {value} (it reads {paused_gauge(metrics_port)})",
             timeout_s=SETTLED_S, every_s=0.3)


def shard_row(engine: Engine, shard_id: str) -> dict[str, Any]:
    """The shard's row, as a dict."""
    with engine.connect() as conn:
        return dict(conn.execute(select(stage_shards).where(
            stage_shards.c.shard_id == shard_id)).one()._mapping)
