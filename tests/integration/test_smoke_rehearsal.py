"""`make smoke-openai` rehearsed against the stand-in and a local image host, so the live check
is known to work before anyone spends money on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.servers import image_host
from tests.standin import serve_standin


def test_the_live_openai_check_passes_against_the_stand_in(tmp_path: Path) -> None:
    with image_host() as images, serve_standin(tmp_path / "standin") as standin:
        env = {**os.environ, "OPENAI_API_KEY": "test", "OPENAI_BASE_URL": standin.base_url,
               "LOTLENS_SMOKE_OPENAI": "1", "LOTLENS_SMOKE_IMAGE_URL": f"{images}/car.png",
               "LOTLENS_SMOKE_UNREACHABLE_URL": f"{images}/missing.png",
               "LOTLENS_SMOKE_ALLOW_LOOPBACK": "1", "LOTLENS_SMOKE_POLL_S": "0.3",
               "LOTLENS_SMOKE_TIMEOUT_S": "180"}
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                              "tests/smoke"], cwd=ROOT, env=env, capture_output=True, timeout=400)
    output = run.stdout.decode()[-3000:]
    assert run.returncode == 0 and "1 passed" in output, output
