"""`scripts/infra.sh install`, with the real Maven, fetches again a jar changed or cut short since:
an interrupted copy or a corrupted file was run as it was, on every later start, because the
install marker named only the version. The pinned hashes it checks the jars against
(deploy/local/kafka/jars.sha256) are tested in tests/unit/test_infra_kafka_jars.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_a_jar_changed_after_its_download_is_fetched_again(tmp_path: Path, infra: object) -> None:
    ours = Path(os.environ.get("LOTLENS_STATE_DIR", ROOT / ".state")) / "kafka" / "lib"
    assert any(ours.glob("kafka-clients-*.jar")), "the test session's infra installed Kafka here"
    state = tmp_path / "state"
    shutil.copytree(ours, state / "kafka" / "lib")
    lib = state / "kafka" / "lib"
    jar = sorted(lib.glob("kafka-clients-*.jar"))[0]
    good = hashlib.sha256(jar.read_bytes()).hexdigest()
    with jar.open("r+b") as damaged:  # a download cut short
        damaged.truncate(jar.stat().st_size // 2)

    env = {**os.environ, "LOTLENS_STATE_DIR": str(state)}
    subprocess.run([str(ROOT / "scripts" / "infra.sh"), "install"], env=env, check=True, timeout=600,
                   capture_output=True)
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == good
    maven_log = state / "kafka" / "logs" / "mvn.log"
    fetched = maven_log.stat().st_mtime_ns

    subprocess.run([str(ROOT / "scripts" / "infra.sh"), "install"], env=env, check=True, timeout=600,
                   capture_output=True)
    assert maven_log.stat().st_mtime_ns == fetched, "intact jars were fetched again"
