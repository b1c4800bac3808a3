"""`scripts/infra.sh`'s PostgreSQL functions, run on a state folder of the test's own (sourced,
the script only defines them; ports of its own, so the shared cluster is never touched)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

AS_ROOT = os.geteuid() == 0
OWN_PORTS = {"LOTLENS_PG_PORT": "55999", "LOTLENS_KAFKA_PORT": "19999",
             "LOTLENS_KAFKA_CONTROLLER_PORT": "19998"}


@pytest.fixture()
def state() -> Iterator[Path]:
    """A state folder the `postgres` user can reach (pytest's own is its owner's alone; the
    script would move the cluster to /var/tmp)."""
    folder = Path(tempfile.mkdtemp(prefix="lotlens-infra-test-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def infra(state: Path, commands: str) -> subprocess.CompletedProcess[str]:
    """`commands` run after sourcing scripts/infra.sh and resolving the cluster's folder."""
    return subprocess.run(["bash", "-c", f'source "$1"; resolve_pg; {commands}', "infra-test",
                           str(ROOT / "scripts" / "infra.sh")],
                          env={**os.environ, "LOTLENS_STATE_DIR": str(state), **OWN_PORTS},
                          capture_output=True, text=True, timeout=120, check=False)


def as_cluster_owner(command: list[str]) -> list[str]:
    """`command` run as the user the script runs PostgreSQL as (`postgres` under root)."""
    if not AS_ROOT:
        return command
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", *command]


def test_a_data_folder_an_initdb_cut_short_left_is_refused_naming_reset(state: Path) -> None:
    # initdb writes PG_VERSION first: every later start took the folder for a cluster and failed
    # in pg_ctl ("PostgreSQL did not start"), run after run.
    data = state / "pg" / "data"
    data.mkdir(parents=True)
    installed = infra(state, 'basename "$(dirname "$PG_BIN")"').stdout.strip()
    (data / "PG_VERSION").write_text(installed + "\n")
    done = infra(state, "init_pg")
    assert done.returncode != 0, "init_pg took a half-made folder for a cluster"
    assert "scripts/infra.sh reset" in done.stderr, done.stderr


def test_initdb_builds_the_cluster_aside_and_renames_it_when_complete(state: Path) -> None:
    # A kill after initdb but before the include line started a server on PostgreSQL's 5432.
    leftover = state / "pg" / "data.new"
    leftover.mkdir(parents=True)
    (leftover / "PG_VERSION").write_text("15\n")  # an earlier attempt, killed
    done = infra(state, "init_pg")
    assert done.returncode == 0, done.stderr
    data = state / "pg" / "data"
    assert "include_if_exists = 'lotlens.conf'" in (data / "postgresql.conf").read_text()
    assert (data / "global" / "pg_control").is_file()
    assert not leftover.exists()
    assert infra(state, "init_pg").returncode == 0, "a complete cluster is taken as it is"


def test_the_socket_lets_in_only_the_clusters_own_user(state: Path) -> None:
    # It was 0777 with local trust: any local user connected as the superuser postgres, and
    # `COPY ... TO PROGRAM` ran commands as PostgreSQL's account.
    (state / "pg" / "data").mkdir(parents=True)
    if AS_ROOT:
        shutil.chown(state / "pg" / "data", "postgres", "postgres")
    assert infra(state, "write_pg_conf").returncode == 0
    settings = (state / "pg" / "data" / "lotlens.conf").read_text()
    assert "unix_socket_permissions = 0700" in settings, settings


def test_stop_leaves_a_process_that_reused_the_postmasters_pid_alone(state: Path) -> None:
    data = state / "pg" / "data"
    data.mkdir(parents=True)
    stranger = subprocess.Popen(as_cluster_owner(["sleep", "60"]), start_new_session=True)
    try:
        installed = infra(state, 'basename "$(dirname "$PG_BIN")"').stdout.strip()
        (data / "PG_VERSION").write_text(installed + "\n")
        (data / "postmaster.pid").write_text(f"{stranger.pid}\n{data}\n")
        if AS_ROOT:
            subprocess.run(["chown", "-R", "postgres:postgres", str(state / "pg")], check=True)
        assert infra(state, "stop_pg").returncode == 0
        assert stranger.poll() is None, "stop signalled a process that is not PostgreSQL"
        status = infra(state, "pg_running && echo running || echo stopped")
        assert status.stdout.strip() == "stopped", "start would skip PostgreSQL"
    finally:
        stranger.kill()
        stranger.wait()


def var_tmp_folder(state: Path) -> Path:
    """Where the script puts the cluster of a state folder it cannot use."""
    return Path("/var/tmp/lotlens-pg-" + hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12])


@pytest.fixture()
def fallback_state(tmp_path: Path) -> Iterator[Path]:
    """A state folder whose path is too long for a socket's: the cluster goes to /var/tmp."""
    state = tmp_path / ("s" * 80)
    state.mkdir()
    yield state
    shutil.rmtree(var_tmp_folder(state), ignore_errors=True)


def test_a_cluster_folder_in_var_tmp_someone_else_made_is_refused(fallback_state: Path) -> None:
    # /var/tmp/lotlens-pg-<hash> is predictable: made 0777 beforehand, with logs/initdb.log a link
    # to a file of root's, the script (as root) wrote initdb's output through it.
    fallback = var_tmp_folder(fallback_state)
    fallback.mkdir()
    fallback.chmod(0o777)
    done = infra(fallback_state, 'echo "$PG_DIR"')
    assert done.returncode != 0, f"took {done.stdout.strip()}"
    assert str(fallback) in done.stderr, done.stderr


def test_a_cluster_folder_in_var_tmp_is_made_private(fallback_state: Path) -> None:
    done = infra(fallback_state, 'echo "$PG_DIR"')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(var_tmp_folder(fallback_state))
    assert var_tmp_folder(fallback_state).stat().st_mode & 0o777 == 0o700
