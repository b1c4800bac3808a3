"""`lotlens-admin clients`: a client's `whsec_` secret is made, printed, listed masked and rotated."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from lotlens_admin.cli import main
from lotlens_common import webhook_secrets
from lotlens_common.settings import ServiceSettings
from tests.conftest import ROOT, Infra, new_id
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.gateway_support import running_gateway

pytestmark = pytest.mark.integration


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out.strip()


def test_secret_list_and_rotate(infra: Infra, engine: Engine, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    client = new_id("client-")
    with engine.begin() as conn:  # what the gateway does at start for each configured client
        webhook_secrets.ensure(conn, [client])
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
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [client])
    code, listed = run(capsys, "clients", "list")
    [mine] = [line for line in listed.splitlines() if line.startswith(client + "\t")]
    shown = mine.split("created ")[1].split("\t")[0]
    created = datetime.strptime(shown, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    assert code == 0
    assert abs((created - before).total_seconds()) <= 120, mine


def test_a_secret_for_a_client_that_has_none_is_refused_and_nothing_is_made(infra: Infra, engine: Engine):
    # `clients secret typo-client` made and printed a live secret (exit 0); `list` then showed the
    # typo as a client and `rotate typo-client` passed the very guard meant to catch it.
    typo = new_id("typo-client-")
    env = admin_env(infra.kafka_bootstrap, infra.database_url)
    done = run_admin(env, "clients", "secret", typo)
    assert (done.returncode, done.stdout) == (1, ""), (done.returncode, done.stdout)
    assert typo in done.stderr and "clients list" in done.stderr and len(done.stderr.splitlines()) == 1
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, typo, datetime.now(UTC)) == []
    assert run_admin(env, "clients", "rotate", typo).returncode == 1


def test_a_stray_clients_secrets_are_deleted_and_a_second_delete_is_refused(infra: Infra, engine: Engine):
    # A client taken out of the configuration (or a typo the old `secret` made) kept a current
    # secret for good: it never expires, the prune never takes it, nothing deleted it.
    stray, kept = new_id("stray-client-"), new_id("client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [stray, kept])
        webhook_secrets.rotate(conn, stray, timedelta(hours=5), datetime.now(UTC))
    env = admin_env(infra.kafka_bootstrap, infra.database_url)
    for unagreed, code in ((["--dry-run"], 0), ([], 2)):  # no terminal to ask on: --yes or nothing
        said = run_admin(env, "clients", "delete", stray, *unagreed)
        assert said.returncode == code, said.stderr
        assert f"would delete the 2 live webhook secrets of client {stray!r}" in said.stdout + said.stderr
    with engine.connect() as conn:
        assert len(webhook_secrets.live(conn, stray, datetime.now(UTC))) == 2
    done = run_admin(env, "clients", "delete", stray, "--yes")
    assert done.returncode == 0, done.stderr
    assert "2" in done.stdout and stray in done.stdout
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, stray, datetime.now(UTC)) == []
        assert len(webhook_secrets.live(conn, kept, datetime.now(UTC))) == 1
    listed = run_admin(env, "clients", "list").stdout
    assert stray not in listed and kept in listed
    again = run_admin(env, "clients", "delete", stray)
    assert again.returncode == 1 and stray in again.stderr


def runbook_steps(alert: str) -> str:
    """The **Do:** paragraph of an alert's section in docs/RUNBOOK.md."""
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text(encoding="utf-8")
    section = runbook.split(f"\n## {alert}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("**Do:**", 1)[1]


def test_the_runbooks_steps_for_a_client_without_a_secret_give_it_one(
        infra: Infra, engine: Engine, settings: ServiceSettings) -> None:
    # The runbook said `clients secret <client_id>` for a missing secret, which refuses a client
    # with none (exit 1): the gateway makes a configured client's secret (at its start).
    steps = runbook_steps("LotLensWebhookAttemptsNotStarted")
    restart, hand_out = "rollout restart deploy/lotlens-gateway", "admin clients secret <client_id>"
    assert restart in steps and hand_out in steps and steps.index(restart) < steps.index(hand_out), steps
    client = new_id("client-")  # configured, its secrets gone (e.g. deleted by hand)
    env = admin_env(infra.kafka_bootstrap, infra.database_url)
    assert run_admin(env, "clients", "secret", client).returncode == 1
    with running_gateway(settings, engine, client_id=client):  # the restart
        done = run_admin(env, "clients", "secret", client)
    assert done.returncode == 0 and done.stdout.startswith("whsec_"), (done.returncode, done.stderr)


def _env_with_clients(infra: Infra, *configured: str) -> dict[str, str]:
    """The admin's environment with the gateway's LOTLENS_CLIENTS naming these clients."""
    env = admin_env(infra.kafka_bootstrap, infra.database_url)
    env["LOTLENS_CLIENTS"] = json.dumps({client: "k" * 32 for client in configured})
    return env


def test_deleting_a_client_configured_in_lotlens_clients_is_refused_and_deletes_nothing(
        infra: Infra, engine: Engine) -> None:
    # `clients delete` saw only the database: it deleted a configured client's secrets and said
    # "deleted 1 webhook secrets" (exit 0), yet the gateway made the client a new secret at its
    # next start, and its webhooks went out unsigned until then.
    client = new_id("client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [client])
    done = run_admin(_env_with_clients(infra, client, new_id("other-")), "clients", "delete", client)
    assert (done.returncode, done.stdout) == (1, ""), (done.returncode, done.stdout)
    [line] = done.stderr.splitlines()
    assert line.startswith("lotlens-admin: ") and client in line and "LOTLENS_CLIENTS" in line
    # A running gateway never makes a deleted secret again (test_gateway_webhook_secrets.py): a
    # gateway started with the client does, and the client's webhooks wait until then.
    assert "started with it" in line, line
    with engine.connect() as conn:
        assert len(webhook_secrets.live(conn, client, datetime.now(UTC))) == 1


def test_the_listing_says_where_each_client_comes_from(infra: Infra, engine: Engine) -> None:
    configured, stray, unsecreted = new_id("client-"), new_id("stray-"), new_id("new-client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [configured, stray])
    listed = run_admin(_env_with_clients(infra, configured, unsecreted), "clients", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert rows[configured][-1] == "from LOTLENS_CLIENTS"
    assert rows[stray][-1] == "database only (not in LOTLENS_CLIENTS: `clients delete` removes it)"
    assert rows[unsecreted][1] == "no secret yet (a gateway started with it makes it)"
    assert rows[unsecreted][-1] == "from LOTLENS_CLIENTS"

    # Without LOTLENS_CLIENTS the admin cannot tell: it says so, and a delete says it did not check.
    env = admin_env(infra.kafka_bootstrap, infra.database_url)
    env.pop("LOTLENS_CLIENTS", None)
    unknown = run_admin(env, "clients", "list")
    [row] = [line.split("\t") for line in unknown.stdout.splitlines() if line.startswith(stray + "\t")]
    assert row[-1] == "source unknown (LOTLENS_CLIENTS is not set here)"
    deleted = run_admin(env, "clients", "delete", stray, "--yes")
    assert deleted.returncode == 0 and stray in deleted.stdout, deleted
    [warning] = deleted.stderr.splitlines()
    assert "LOTLENS_CLIENTS is not set here" in warning and stray in warning
    assert "restart" in warning, warning


@pytest.mark.parametrize(("answer", "code", "left"), [(b"no\n", 1, 1), (b"yes\n", 0, 0)])
def test_a_delete_on_a_terminal_asks_first_and_deletes_only_on_yes(
        infra: Infra, engine: Engine, answer: bytes, code: int, left: int) -> None:
    stray = new_id("stray-client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [stray])
    operator, terminal = pty.openpty()  # `kubectl exec -it`: a terminal to ask on
    try:
        asked = subprocess.Popen([sys.executable, "-m", "lotlens_admin", "clients", "delete", stray],
                                 cwd=ROOT, env=admin_env(infra.kafka_bootstrap, infra.database_url),
                                 stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(operator, answer)
        out, err = asked.communicate(timeout=60)
    finally:
        os.close(operator)
        os.close(terminal)
    assert asked.returncode == code, err
    # Asked on stderr: with stdout redirected (`> out.txt`) the question went into the file and the
    # command looked hung.
    assert f"this will delete the 1 live webhook secrets of client {stray!r}" in err
    assert "Type yes to do it: " in err and "this will" not in out and "Type yes" not in out, out
    with engine.connect() as conn:
        assert len(webhook_secrets.live(conn, stray, datetime.now(UTC))) == left
