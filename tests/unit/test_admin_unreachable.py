"""`lotlens-admin` during an outage: one line naming what did not answer and exit code 3, no
traceback (SREs run it exactly then). Both dependencies are a refused port on loopback."""

from __future__ import annotations

import time

import pytest

from lotlens_admin.cli import main


def test_kafka_that_does_not_answer_is_one_line_and_exit_code_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    # The operator's wait for Kafka (default 10 s), short: a refused broker is all this checks.
    monkeypatch.setenv("KAFKA_COMMAND_TIMEOUT_S", "1")
    started = time.monotonic()
    assert main(["dlq", "list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("lotlens-admin: Kafka did not answer") and "Traceback" not in err
    # The setting is what bounds the wait: the 10 s default would not be over yet.
    assert time.monotonic() - started < 8.0


def test_postgresql_that_does_not_answer_is_one_line_and_exit_code_3(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://lotlens:lotlens@127.0.0.1:1/lotlens")
    assert main(["clients", "list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("lotlens-admin: PostgreSQL did not answer") and "127.0.0.1" in err


def test_a_database_that_answers_with_an_error_is_exit_1_not_did_not_answer(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Every database error read "did not answer" with the outage's exit code 3: a missing table
    # (migrations not run) or a permission refused sent the operator looking for an outage.
    from sqlalchemy.exc import ProgrammingError

    from lotlens_admin import clients

    def refused(_args: object) -> int:
        raise ProgrammingError("SELECT …", {}, Exception('relation "client_webhook_secrets" does not exist'))

    monkeypatch.setattr(clients, "_list", refused)
    assert main(["clients", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lotlens-admin: PostgreSQL refused the command: relation")
    assert "Traceback" not in err


def test_without_a_command_the_usage_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: lotlens-admin" in err
