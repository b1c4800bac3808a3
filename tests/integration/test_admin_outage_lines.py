"""`lotlens-admin` with Kafka down, as its own process: exit code 3 and the one line on stderr the
README promises, not librdkafka's retry lines (SREs run it exactly then, and read the end)."""

from __future__ import annotations

import pytest

from tests.conftest import Infra
from tests.integration.admin_support import REFUSING_KAFKA, admin_env, run_admin

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("argv", [["dlq", "list"], ["dlq", "show", "0:0"], ["dlq", "replay", "--all"]])
def test_a_kafka_that_refuses_connections_is_one_line_on_stderr(infra: Infra, argv: list[str]) -> None:
    # Each printed ~195 "FAIL [rdkafka#consumer-1] ... Connection refused" lines before its own.
    done = run_admin(admin_env(REFUSING_KAFKA, infra.database_url), *argv)
    lines = done.stderr.splitlines()
    assert done.returncode == 3, done.stderr[-2000:]
    assert len(lines) == 1, f"{len(lines)} lines on stderr, the first: {lines[:2]}"
    assert lines[0].startswith("lotlens-admin: Kafka did not answer")
