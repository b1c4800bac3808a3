"""`make smoke-openai` rehearsed against the stand-in and a local image host, so the live check
is known to work before anyone spends money on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from tests.conftest import ROOT, Infra, new_id
from tests.servers import image_host
from tests.standin import serve_standin


def test_the_live_openai_check_passes_against_the_stand_in(tmp_path: Path, infra: Infra) -> None:
    # A database of its own, as `make smoke-openai` has beside a deployment's: the check's stage
    # takes up every shard of its name, and the worker's database holds other tests' shards,
    # whose stand-ins are gone (their batches unreadable: the stage rightly paused on them).
    database = f"lotlens_smoke_{new_id()}"
    try:
        run = _rehearse(tmp_path, infra, database)
    finally:
        admin = create_engine(make_url(infra.database_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    output = run.stdout.decode()[-3000:]
    assert run.returncode == 0 and "1 passed" in output, output


def _rehearse(tmp_path: Path, infra: Infra, database: str) -> subprocess.CompletedProcess[bytes]:
    """`make smoke-openai`'s run, against the stand-in and a local image host."""
    with image_host() as images, serve_standin(tmp_path / "standin") as standin:
        env = {**os.environ, "LOTLENS_TEST_DATABASE": database, "DATABASE_URL": infra.database_url,
               "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
               "OPENAI_API_KEY": "test", "OPENAI_BASE_URL": standin.base_url,
               "LOTLENS_SMOKE_OPENAI": "1", "LOTLENS_SMOKE_IMAGE_URL": f"{images}/car.png",
               "LOTLENS_SMOKE_UNREACHABLE_URL": f"{images}/missing.png",
               "LOTLENS_SMOKE_ALLOW_LOOPBACK": "1", "LOTLENS_SMOKE_POLL_S": "0.3",
               "LOTLENS_SMOKE_TIMEOUT_S": "180"}
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                               "tests/smoke"], cwd=ROOT, env=env, capture_output=True, timeout=400)
