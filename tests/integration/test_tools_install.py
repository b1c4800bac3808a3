"""`scripts/tools.sh` on a machine without promtool: it takes promtool alone out of Debian's
`prometheus` package into the tools cache, and never installs the package, whose postinst starts
a Prometheus server on :9090 on a systemd host. apt-get is a stand-in here that records what it is
asked and hands out a package holding a fake promtool; dpkg-deb is the real one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

# The stand-in apt-get: logs its arguments; `download prometheus` builds a package in the cwd.
APT_GET = """#!/bin/sh
echo "$*" >> "$APT_LOG"
if [ "$1" = download ] || [ "$2" = download ]; then
  root=$(mktemp -d) && mkdir -p "$root/DEBIAN" "$root/usr/bin"
  printf 'Package: prometheus\\nVersion: 2.42.0\\nArchitecture: all\\n' > "$root/DEBIAN/control"
  printf 'Maintainer: t <t@t>\\nDescription: t\\n' >> "$root/DEBIAN/control"
  printf '#!/bin/sh\\necho "promtool, version 2.42.0"\\n' > "$root/usr/bin/promtool"
  chmod 755 "$root/usr/bin/promtool"
  dpkg-deb --build "$root" prometheus_2.42.0_all.deb >/dev/null
fi
"""


def system_path_without_promtool(directory: Path) -> str:
    """A directory of links to every command on this PATH but promtool (and apt-get)."""
    directory.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for command in Path(folder).glob("*") if Path(folder).is_dir() else []:
            link = directory / command.name
            if command.name not in ("promtool", "apt-get") and not link.exists():
                link.symlink_to(command)
    return str(directory)


def test_promtool_is_unpacked_into_the_cache_and_the_prometheus_package_never_installed(
        tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    # The Go tools already built at their pinned versions: only promtool is missing.
    script = (ROOT / "scripts" / "tools.sh").read_text(encoding="utf-8")
    for name, version in (("kustomize", "KUSTOMIZE_VERSION"), ("kubeconform", "KUBECONFORM_VERSION"),
                          ("toxiproxy-server", "TOXIPROXY_VERSION")):
        pinned = next(line.split("=", 1)[1] for line in script.splitlines() if line.startswith(f"{version}="))
        (tools / f"{name}-{pinned}").write_text("#!/bin/sh\n")
        (tools / f"{name}-{pinned}").chmod(0o755)
    # And axe-core fetched (from npm's registry, off loopback).
    axe = next(line.split("=", 1)[1] for line in script.splitlines() if line.startswith("AXE_CORE_VERSION="))
    (tools / f"axe-core-{axe}.min.js").write_text("/* axe */\n")
    specs = next(line.split("=", 1)[1] for line in script.splitlines()
                 if line.startswith("ASYNCAPI_SPECS_VERSION="))
    (tools / f"asyncapi-3.0.0-{specs}.json").write_text("{}\n")
    squawk = next(line.split("=", 1)[1] for line in script.splitlines() if line.startswith("SQUAWK_VERSION="))
    (tools / f"squawk-{squawk}").write_text("#!/bin/sh\n")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    (fakes / "apt-get").write_text(APT_GET)
    (fakes / "apt-get").chmod(0o755)
    log = tmp_path / "apt.log"
    env = {**os.environ, "LOTLENS_TOOLS_DIR": str(tools), "APT_LOG": str(log),
           "PATH": os.pathsep.join([str(fakes), system_path_without_promtool(tmp_path / "system")])}

    for _ in range(2):  # idempotent: the second run finds it in the cache
        done = subprocess.run([str(ROOT / "scripts" / "tools.sh")], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == str(tools)
    asked = log.read_text().splitlines()
    assert not [line for line in asked if "install" in line.split()], asked
    assert [line for line in asked if "download" in line.split()] == ["download -qq prometheus"], asked
    promtool = subprocess.run([str(tools / "promtool"), "--version"], capture_output=True, text=True,
                             check=True)
    assert "2.42.0" in promtool.stdout
