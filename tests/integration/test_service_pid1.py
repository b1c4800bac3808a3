"""Each service started as its image starts it: the console script of its `[project.scripts]`
(the image's `lotlens-service` links to it), as PID 1 of a PID namespace of its own, as in a pod;
and the admin toolbox's command likewise. The kernel drops a signal PID 1 has no handler for, so
a SIGTERM that arrives before the process catches it is lost and the pod waits out its whole
grace period for the kubelet's SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from chaos.shutdown import grace_seconds
from tests.conftest import ROOT
from tests.polling import wait_for

SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
# Nothing listens on port 1: no service gets as far as a connection in these tests, and one that
# tried would be refused at once rather than reach shared infrastructure.
CLOSED = "127.0.0.1:1"
ENV = {"KAFKA_BOOTSTRAP_SERVERS": CLOSED, "DATABASE_URL": f"postgresql+psycopg2://x:x@{CLOSED}/x",
       "LOTLENS_METRICS_PORT": "0",
       "LOTLENS_CLIENTS": '{"client-a": "a-key-of-thirty-two-characters-or-more"}'}
# A shared library the services' start-up imports load (pydantic's compiled core, imported by
# every settings module): once it is mapped, the start-up is under way, well before it is done.
DURING_IMPORTS = "_pydantic_core"


def entry_point(service: str) -> Path:
    """The console script the service's image runs (its only `[project.scripts]` entry)."""
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text(encoding="utf-8"))
    [script] = project["project"]["scripts"]
    return Path(sys.executable).parent / str(script)


def namespaces_refused() -> str | None:
    """Why this machine cannot start a process in a PID namespace of its own, or None."""
    try:
        done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "util-linux's unshare is not installed"
    return None if done.returncode == 0 else f"the kernel refused a PID namespace: {done.stderr.strip()}"


def pid_one(outer: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The host's pid of the namespace's PID 1 (unshare's child), once it runs the service's script."""
    children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children")

    def started() -> int:
        assert outer.poll() is None, f"the service never started (unshare exited {outer.poll()})"
        pids = children.read_text().split()
        if pids and Path(f"/proc/{pids[0]}/exe").resolve() == Path(sys.executable).resolve():
            return int(pids[0])
        return 0

    return wait_for(started, "the service to start", timeout_s=timeout_s, every_s=0.005)


def importing(pid: int) -> bool:
    """Whether the process's start-up imports are under way (see DURING_IMPORTS)."""
    return DURING_IMPORTS in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_started_as_its_image_does_stops_on_a_sigterm_during_start_up(
        service: str, tmp_path: Path) -> None:
    if reason := namespaces_refused():
        pytest.skip(reason)
    grace = grace_seconds(service)
    log = tmp_path / f"{service}.log"
    with log.open("wb") as output:
        outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", str(entry_point(service))],
                                 cwd=ROOT, env={**os.environ, **ENV}, stdout=output, stderr=output,
                                 start_new_session=True)
    try:
        service_pid = pid_one(outer, grace)

        def began() -> bool:
            if importing(service_pid):
                return True
            assert outer.poll() is None, "the start-up never began (unshare exited)"
            return False

        wait_for(began, "the start-up to begin", timeout_s=grace, every_s=0.005)
        os.kill(service_pid, signal.SIGTERM)
        try:
            # unshare exits as its child did. The old entry point installed no handler until after
            # its imports: the SIGTERM was dropped and the service started and ran on.
            code = outer.wait(grace)
        except subprocess.TimeoutExpired:
            code = None
        logged = log.read_text(errors="replace")[-3000:]
        assert code == 0, f"{service}: exit {code} in its {grace:.0f} s grace (None: still running)\n{logged}"
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait()


def test_the_admin_toolbox_stops_at_once_when_its_job_is_deleted(tmp_path: Path) -> None:
    # Its PID 1 was `sleep 86400`, which has no SIGTERM handler: the kernel dropped the signal and
    # every `kubectl delete job lotlens-admin` waited out the pod's 30 s grace for the SIGKILL.
    if reason := namespaces_refused():
        pytest.skip(reason)
    job = yaml.safe_load((ROOT / "deploy" / "k8s" / "admin" / "admin-job.yaml").read_text(encoding="utf-8"))
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *container["command"]],
                             cwd=tmp_path, start_new_session=True)
    try:
        toolbox = Path(f"/proc/{outer.pid}/task/{outer.pid}/children")

        def waiting() -> list[str]:
            """Its PID 1, once its `sleep` runs (as PID 1 itself, or as PID 1's child)."""
            pids = toolbox.read_text().split()
            if pids and (Path(f"/proc/{pids[0]}/exe").resolve().name == "sleep"
                         or Path(f"/proc/{pids[0]}/task/{pids[0]}/children").read_text().strip()):
                return pids
            assert outer.poll() is None, "the toolbox never started waiting (unshare exited)"
            return []

        pids = wait_for(waiting, "the toolbox to start waiting", timeout_s=grace, every_s=0.005)
        os.kill(int(pids[0]), signal.SIGTERM)
        try:
            code = outer.wait(grace)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"exit {code} in the pod's {grace} s grace (None: still running)"
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait()
