"""`scripts/bootstrap.sh` installs uv only as the pinned, hash-checked wheel of
scripts/uv-requirements.txt: pip took whatever file its index (or a mirror, or a --find-links
folder) served under the name `uv==<version>`. Run on a copy of the scripts, with pip offline and
pointed at a folder of the test's own (nothing is downloaded)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

UV_PIN = re.search(r"^uv==(\S+)", (ROOT / "scripts" / "uv-requirements.txt").read_text(), re.M)
assert UV_PIN, "scripts/uv-requirements.txt pins uv"
UV_VERSION = UV_PIN[1]


def record_line(name: str, text: str) -> str:
    """A wheel RECORD line: pip checks each file's hash against it."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")
    return f"{name},sha256={digest},{len(text.encode())}\n"


def forged_wheel(folder: Path) -> Path:
    """An installable wheel named like uv's, whose content is not uv's."""
    folder.mkdir()
    wheel = folder / f"uv-{UV_VERSION}-py3-none-any.whl"
    info = f"uv-{UV_VERSION}.dist-info"
    files = {"uv_forged.py": "print('not uv')\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: uv\nVersion: {UV_VERSION}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = "".join(record_line(name, text) for name, text in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


def bootstrap(tmp_path: Path, wheels: Path) -> subprocess.CompletedProcess[str]:
    """scripts/bootstrap.sh of a copy of the repository, with a python3 that has no uv around."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], check=True,
                            capture_output=True, text=True).stdout.strip()
    (bin_dir / "python3").symlink_to(python)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "PYTHONUSERBASE": str(tmp_path / "user"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels),
           "PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run([str(repo / "scripts" / "bootstrap.sh")], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_wheel_that_is_not_the_pinned_uv_is_refused(tmp_path: Path) -> None:
    done = bootstrap(tmp_path, forged_wheel(tmp_path / "wheels").parent)
    assert done.returncode != 0
    assert "DO NOT MATCH THE HASHES" in done.stderr, done.stderr
    assert not list((tmp_path / "user").rglob("uv-*.dist-info")), "the forged uv was installed"


def test_a_uv_of_the_pinned_version_already_there_is_kept(tmp_path: Path) -> None:
    # Idempotent: no pip run at all (the only wheel on offer is a forged one).
    local_bin = tmp_path / "home" / ".local" / "bin"
    local_bin.mkdir(parents=True)
    (local_bin / "uv").write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "uv {UV_VERSION}"\nexit 0\n')
    (local_bin / "uv").chmod(0o755)
    venv_python = tmp_path / "repo" / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    done = bootstrap(tmp_path, forged_wheel(tmp_path / "wheels").parent)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "user").exists(), "pip ran although uv was there"
