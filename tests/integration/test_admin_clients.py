"""`lotlens-admin clients`: a client's `whsec_` secret is made, printed, listed masked and rotated."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from lotlens_admin.cli import main
from lotlens_common import webhook_secrets
from tests.conftest import Infra, new_id

pytestmark = pytest.mark.integration


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out.strip()


def test_secret_list_and_rotate(infra: Infra, engine: Engine, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    client = new_id("client-")
    code, first = run(capsys, "clients", "secret", client)
    assert code == 0 and first.startswith("whsec_") and len(webhook_secrets.secret_bytes(first)) == 32
    assert run(capsys, "clients", "secret", client) == (0, first)  # the same secret, not a new one

    code, second = run(capsys, "clients", "rotate", client, "--overlap-hours", "2")
    assert code == 0 and second.startswith("whsec_") and second != first
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, client, datetime.now(UTC)) == [second, first]
    assert run(capsys, "clients", "secret", client) == (0, second)

    code, listed = run(capsys, "clients", "list")
    mine = [line for line in listed.splitlines() if line.startswith(client + "\t")]
    assert code == 0 and len(mine) == 2
    assert "current" in mine[0] and "current" not in mine[1]
    assert first not in listed and second not in listed  # masked

    code, third = run(capsys, "clients", "rotate", client, "--overlap-hours", "0")
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, client, datetime.now(UTC)) == [third]
    with pytest.raises(SystemExit) as refused:  # argparse's usage error (tests/unit/test_admin_arguments.py)
        run(capsys, "clients", "rotate", client, "--overlap-hours", "-1")
    assert refused.value.code == 2


def test_rotating_a_client_that_has_no_secret_is_refused_and_writes_nothing(
        infra: Infra, engine: Engine, monkeypatch, capsys):
    # A mistyped client id made a secret for nobody and exited 0: the operator rotating a leaked
    # secret believed it done while the leaked one went on signing the real client's webhooks.
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    typo = new_id("no-such-client-")
    code = main(["clients", "rotate", typo])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert typo in captured.err and "clients list" in captured.err
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, typo, datetime.now(UTC)) == []


def test_the_listing_shows_times_in_utc_whatever_the_sessions_zone(infra: Infra, engine: Engine,
                                                                    monkeypatch, capsys):
    # psycopg2 gives timestamptz in the session's zone and the listing appended "Z" to it: with a
    # server or role whose TimeZone is not UTC the times were hours off.
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")
    client = new_id("client-")
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    assert run(capsys, "clients", "secret", client)[0] == 0
    code, listed = run(capsys, "clients", "list")
    [mine] = [line for line in listed.splitlines() if line.startswith(client + "\t")]
    shown = mine.split("created ")[1].split("\t")[0]
    created = datetime.strptime(shown, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    assert code == 0
    assert abs((created - before).total_seconds()) <= 120, mine
