"""`scripts/infra.sh` runs only the Kafka jars pinned in deploy/local/kafka/jars.sha256: Maven
checked a download only against the .sha1 served by the same server (a mirror in
~/.m2/settings.xml supplies both), copied jars already in ~/.m2 unchecked, and the script then
trusted whatever arrived the first time. Sourced on state folders of the tests' own, with `mvn`
a stand-in copying prepared jars where Maven would put them (nothing is downloaded)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

LOCK = ROOT / "deploy" / "local" / "kafka" / "jars.sha256"
# Ports of the tests' own: the shared broker and cluster are never touched.
OWN_PORTS = {"LOTLENS_PG_PORT": "55999", "LOTLENS_KAFKA_PORT": "19999",
             "LOTLENS_KAFKA_CONTROLLER_PORT": "19998"}


def locked_names() -> list[str]:
    return [line.split()[1] for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def real_jars() -> dict[str, Path]:
    """The broker's jars as Maven left them on this machine (~/.m2, or an installed state folder)."""
    found: dict[str, Path] = {}
    state = Path(os.environ.get("LOTLENS_STATE_DIR", ROOT / ".state")) / "kafka" / "lib"
    for folder in (state, Path.home() / ".m2" / "repository"):
        for jar in sorted(folder.rglob("*.jar")) if folder.is_dir() else ():
            found.setdefault(jar.name, jar)
    missing = set(locked_names()) - set(found)
    if missing:
        pytest.skip(f"Kafka jars not on this machine (scripts/infra.sh install): {sorted(missing)[:3]}")
    return {name: found[name] for name in locked_names()}


def copy_jars(real_jars: dict[str, Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, jar in real_jars.items():
        shutil.copyfile(jar, folder / name)
    return folder


def flip_a_byte(jar: Path) -> None:
    content = bytearray(jar.read_bytes())
    content[len(content) // 2] ^= 0x01
    jar.write_bytes(bytes(content))


@pytest.fixture()
def maven(tmp_path: Path) -> Iterator[Path]:
    """A `mvn` that copies the jars of `<returned folder>` to -DoutputDirectory, as Maven copies
    them out of ~/.m2, and counts its runs in `<returned folder>/runs`."""
    source = tmp_path / "m2"
    source.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "mvn"
    stand_in.write_text(f"""#!/usr/bin/env bash
echo run >>"{source}/runs"
for arg; do case "$arg" in -DoutputDirectory=*) out="${{arg#*=}}";; esac; done
mkdir -p "$out" && cp "{source}"/*.[jJ][aA][rR] "$out"/
""")
    stand_in.chmod(0o755)
    yield source


def infra(state: Path, maven: Path, commands: str, repo: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`commands` run after sourcing `repo`'s scripts/infra.sh, the stand-in `mvn` first on PATH."""
    path = f"{maven.parent / 'bin'}:{os.environ['PATH']}"
    script = str(repo / "scripts" / "infra.sh")
    return subprocess.run(["bash", "-c", f'source "$1"; {commands}', "infra-test", script],
                          env={**os.environ, **OWN_PORTS, "LOTLENS_STATE_DIR": str(state), "PATH": path},
                          capture_output=True, text=True, timeout=120, check=False)


def repo_copy(tmp_path: Path) -> Path:
    """The scripts and the Kafka folder of the repository, to change without touching ours."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copytree(ROOT / "deploy" / "local" / "kafka", repo / "deploy" / "local" / "kafka")
    return repo


def maven_runs(maven: Path) -> int:
    runs = maven / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_the_locked_jars_install_and_are_not_fetched_again(tmp_path: Path, real_jars: dict[str, Path],
                                                           maven: Path) -> None:
    for name, jar in real_jars.items():
        shutil.copyfile(jar, maven / name)
    state = tmp_path / "state"
    done = infra(state, maven, "install_kafka")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (state / "kafka" / "lib").glob("*.jar")) == sorted(real_jars)
    again = infra(state, maven, "install_kafka")
    assert again.returncode == 0, again.stderr
    assert maven_runs(maven) == 1, "jars matching the lock were fetched again"


def test_a_changed_jar_maven_copies_from_its_local_repository_is_refused(
        tmp_path: Path, real_jars: dict[str, Path], maven: Path) -> None:
    for name, jar in real_jars.items():
        shutil.copyfile(jar, maven / name)
    flip_a_byte(maven / "kafka-clients-4.1.1.jar")
    state = tmp_path / "state"
    done = infra(state, maven, "install_kafka")
    assert done.returncode != 0, "installed a jar the lock does not pin"
    assert "kafka-clients-4.1.1.jar" in done.stderr, done.stderr
    assert not (state / "kafka" / "lib").exists(), "the refused jars were put where the broker runs them"


def test_a_jar_changed_in_place_is_fetched_again_and_a_bad_one_refused_before_the_broker_runs(
        tmp_path: Path, real_jars: dict[str, Path], maven: Path) -> None:
    # The old marker (.sha256 written after the download) vouched for whatever was there.
    state = tmp_path / "state"
    lib = copy_jars(real_jars, state / "kafka" / "lib")
    for name, jar in real_jars.items():
        shutil.copyfile(jar, maven / name)
    flip_a_byte(lib / "scala-library-2.13.16.jar")
    subprocess.run(["bash", "-c", "sha256sum -- *.jar >.sha256"], cwd=lib, check=True)
    done = infra(state, maven, "install_kafka")
    assert done.returncode == 0, done.stderr
    assert "scala-library-2.13.16.jar" in done.stderr, "the changed jar was not named"
    fetched = (lib / "scala-library-2.13.16.jar").read_bytes()
    assert fetched == (maven / "scala-library-2.13.16.jar").read_bytes(), "the changed jar is still there"

    flip_a_byte(lib / "scala-library-2.13.16.jar")  # and changed again once installed
    start = infra(state, maven, "start_kafka")
    assert start.returncode != 0, "the broker was started on a jar the lock does not pin"
    assert "scala-library-2.13.16.jar" in start.stderr, start.stderr
    assert not (state / "kafka" / "kafka.pid").exists()


@pytest.mark.parametrize("extra", ["evil-1.0.jar", "EVIL-1.0.JAR"])
def test_a_jar_not_in_the_lock_is_refused(tmp_path: Path, real_jars: dict[str, Path], maven: Path,
                                          extra: str) -> None:
    for name, jar in real_jars.items():
        shutil.copyfile(jar, maven / name)
    shutil.copyfile(real_jars["kafka-clients-4.1.1.jar"], maven / extra)
    done = infra(tmp_path / "state", maven, "install_kafka")
    assert done.returncode != 0, "installed a jar the lock does not name"
    assert extra in done.stderr, done.stderr


def test_a_jar_of_the_lock_missing_is_refused(tmp_path: Path, real_jars: dict[str, Path],
                                              maven: Path) -> None:
    for name, jar in real_jars.items():
        if name != "log4j-core-2.24.3.jar":
            shutil.copyfile(jar, maven / name)
    done = infra(tmp_path / "state", maven, "install_kafka")
    assert done.returncode != 0
    assert "log4j-core-2.24.3.jar is missing" in done.stderr, done.stderr


def test_the_lock_holds_the_hashes_of_the_jars_it_is_made_from(tmp_path: Path,
                                                               real_jars: dict[str, Path]) -> None:
    # The documented regeneration, from a folder of verified jars, reproduces the committed lock.
    repo = repo_copy(tmp_path)
    (repo / "deploy" / "local" / "kafka" / "jars.sha256").unlink()
    jars = copy_jars(real_jars, tmp_path / "jars")
    subprocess.run([str(repo / "scripts" / "kafka-jars.sh"), "lock", str(jars)], check=True,
                   capture_output=True, timeout=60)
    assert (repo / "deploy" / "local" / "kafka" / "jars.sha256").read_text() == LOCK.read_text()


def test_a_pom_changed_since_the_lock_was_made_is_refused_naming_the_command(
        tmp_path: Path, real_jars: dict[str, Path], maven: Path) -> None:
    repo = repo_copy(tmp_path)
    pom = repo / "deploy" / "local" / "kafka" / "pom.xml"
    pom.write_text(pom.read_text().replace("<kafka.version>4.1.1<", "<kafka.version>4.2.0<"))
    for name, jar in real_jars.items():
        shutil.copyfile(jar, maven / name)
    done = infra(tmp_path / "state", maven, "install_kafka", repo)
    assert done.returncode != 0, "ran jars locked for another pom"
    assert "scripts/kafka-jars.sh lock" in done.stderr, done.stderr
