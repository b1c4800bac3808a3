"""`lotlens-admin` during an outage: one line naming what did not answer and exit code 3, no
traceback (SREs run it exactly then). Both dependencies are a refused port on loopback."""

from __future__ import annotations

import pytest

from lotlens_admin.cli import main


def test_kafka_that_does_not_answer_is_one_line_and_exit_code_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["dlq", "list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("lotlens-admin: Kafka did not answer") and "Traceback" not in err


def test_postgresql_that_does_not_answer_is_one_line_and_exit_code_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://lotlens:lotlens@127.0.0.1:1/lotlens")
    assert main(["clients", "list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("lotlens-admin: PostgreSQL did not answer") and "127.0.0.1" in err
