"""`lotlens-admin db`: an SRE rolling a release back steps the schema down one revision at a time,
sees where it is, and gets one line, nothing changed, when a step would lose what nothing brings back."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from lotlens_admin import schema
from lotlens_admin.cli import main
from lotlens_common.migrate import database_revisions, release_revisions
from tests.conftest import Infra, own_schema
from tests.integration.admin_support import admin_env, run_admin

pytestmark = pytest.mark.integration


def url_of(own: Engine) -> str:
    return own.url.render_as_string(hide_password=False)


def test_db_downgrade_minus_one_undoes_the_newest_revision_once_the_operator_agrees(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with own_schema(infra, engine) as own:
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        (head,) = release_revisions()
        assert main(["db", "downgrade", "-1"]) == 2  # no terminal to ask on, as in a script
        asked = capsys.readouterr().err
        assert f"undo {head}" in asked and "nothing was changed" in asked
        assert database_revisions(own) == {head}

        # The command as the operator runs it, in a process of its own.
        done = run_admin(admin_env(infra.kafka_bootstrap, url_of(own)), "db", "downgrade", "-1", "--yes")
        assert done.returncode == 0, done.stderr
        (below,) = database_revisions(own)
        assert below != head and done.stdout.strip() == f"undid {head}: the schema is at {below}"
        assert main(["db", "current"]) == 0
        assert capsys.readouterr().out.startswith(f"{below}: behind this release's {head}")


def test_a_step_that_would_lose_unpublished_events_is_one_line_and_changes_nothing(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with own_schema(infra, engine, "0011_outbox") as own:
        with own.begin() as conn:
            conn.execute(text("INSERT INTO outbox (topic, job_id, event_type, payload) "
                              "VALUES ('submissions', 'job-1', 'JobSubmitted', '{}')"))
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        assert main(["db", "downgrade", "-1", "--yes"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "1 event(s) not yet published" in err, err
        assert err.rstrip().endswith("the schema is at 0011_outbox")
        assert database_revisions(own) == {"0011_outbox"}


@pytest.mark.parametrize(("target", "problem"), [
    ("-3", "2 revision(s) above the base, not 3"),
    ("0099_unknown", "0099_unknown is no revision below the schema's (0002)"),
])
def test_a_target_below_no_revision_of_the_schema_is_refused(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        target: str, problem: str) -> None:
    with own_schema(infra, engine, "0002") as own:
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        assert main(["db", "downgrade", target, "--yes"]) == 1
        assert problem in capsys.readouterr().err
        assert database_revisions(own) == {"0002"}


def test_a_schema_a_newer_release_wrote_is_left_to_that_release_s_image(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with own_schema(infra, engine, "0002") as own:
        with own.begin() as conn:  # as the migrate Job of a newer release leaves it
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        assert main(["db", "current"]) == 0
        (head,) = release_revisions()
        assert capsys.readouterr().out.startswith(  # the revision a rollback to this release steps down to
            f"0099_from_the_future: newer than this release's {head} (downgrade it to {head} ")
        assert main(["db", "downgrade", "-1", "--yes"]) == 1
        assert "with the admin image of the release that added it" in capsys.readouterr().err
        assert database_revisions(own) == {"0099_from_the_future"}


# Rows at the head that a revision far below it refuses to lose: a client's webhook secret
# (0013_client_webhook_secrets) and a shard estimated past an integer (0017_shard_tokens_bigint).
SECRET = "INSERT INTO client_webhook_secrets (client_id, secret) VALUES ('acme', 'whsec_AAAA')"
BIG_SHARD = ("INSERT INTO stage_shards (shard_id, stage, job_id, client_id, attempt, lot_count, "
             "estimated_tokens) VALUES ('shard-1', 'vision', 'job-1', 'acme', 1, 50000, 2300000000)")


def test_a_refusal_several_revisions_down_is_named_before_the_first_step_and_nothing_is_undone(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with own_schema(infra, engine) as own:
        with own.begin() as conn:
            conn.execute(text(SECRET))
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        (head,) = release_revisions()
        assert main(["db", "downgrade", "0011_outbox", "--dry-run"]) == 1
        out, err = capsys.readouterr()
        assert "would undo" not in out and err.count("\n") == 1, (out, err)
        assert "client_webhook_secrets holds 1 webhook signing secret" in err
        assert err.rstrip().endswith(f"nothing was changed: the schema is at {head}")

        assert main(["db", "downgrade", "0011_outbox", "--yes"]) == 1
        assert "client_webhook_secrets holds 1" in capsys.readouterr().err
        assert database_revisions(own) == {head}
        assert main(["db", "current"]) == 0
        assert capsys.readouterr().out.startswith(f"{head}: this release's newest")


def test_every_refusal_on_the_way_down_is_named_at_once_newest_first(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with own_schema(infra, engine) as own:
        with own.begin() as conn:
            conn.execute(text(SECRET))
            conn.execute(text(BIG_SHARD))
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        (head,) = release_revisions()
        assert main(["db", "downgrade", "base", "--yes"]) == 1
        lines = capsys.readouterr().err.splitlines()
        assert [line.split(": ")[1].split(" ")[0] for line in lines] == [
            "1", "client_webhook_secrets", "1"], lines  # 0017, 0013, then 0001: stage_shards holds a row
        assert database_revisions(own) == {head}


def test_a_row_written_after_the_first_check_stops_the_downgrade_at_its_revision_and_says_so(
        infra: Infra, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with own_schema(infra, engine, "0013_usage") as own:
        with own.begin() as conn:
            conn.execute(text(SECRET))
        monkeypatch.setenv("DATABASE_URL", url_of(own))
        # As if a pod left running made the secret after the command asked every revision.
        monkeypatch.setattr(schema, "refusals", lambda _engine, _undone: [])
        assert main(["db", "downgrade", "0011_outbox", "--yes"]) == 1
        err = capsys.readouterr().err
        assert "client_webhook_secrets holds 1" in err and err.count("\n") == 1
        assert err.rstrip().endswith("(written while the downgrade ran); the schema is at "
                                     "0013_client_webhook_secrets")
        assert database_revisions(own) == {"0013_client_webhook_secrets"}
