"""Graceful stops (`sigterm`): a rolling restart or a scale-in sends SIGTERM to an instance in the
middle of its work, and the kubelet kills it (SIGKILL) once the pod's grace period has passed.
Each service gets the grace its Kubernetes Deployment gives it (`deploy/k8s/base`), less the
preStop pause that runs before the signal; an instance that outlives it, or exits non-zero, is a
violation (a kill at the deadline cuts what the drain was for; a non-zero exit is a crash loop's
start in Kubernetes' eyes)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "base"


@dataclass(frozen=True)
class Shutdown:
    """One instance's stop after SIGTERM: how long it took and how it ended."""

    instance: str
    service: str
    grace_s: float
    seconds: float
    returncode: int | None  # None: still running at the deadline (then killed)

    def violation(self) -> str | None:
        """Why this stop breaks the contract with Kubernetes, or None."""
        if self.returncode is None:
            return f"{self.instance} still running {self.grace_s:.0f} s after SIGTERM (killed)"
        if self.returncode != 0:
            return f"{self.instance} exited {self.returncode} after SIGTERM ({self.seconds:.1f} s)"
        return None


@cache
def grace_seconds(service: str) -> float:
    """Seconds from SIGTERM until the kubelet's SIGKILL: the Deployment's
    terminationGracePeriodSeconds less its containers' preStop `sleep` (which runs first)."""
    for document in yaml.safe_load_all((MANIFESTS / f"{service}.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            pod: dict[str, Any] = document["spec"]["template"]["spec"]
            grace = float(pod.get("terminationGracePeriodSeconds", 30))  # Kubernetes' default
            return grace - sum(_pre_stop_pause(container) for container in pod["containers"])
    raise LookupError(f"no Deployment in {MANIFESTS / service}.yaml")


def _pre_stop_pause(container: dict[str, Any]) -> float:
    """The seconds a container's preStop `sleep N` takes (0 without one)."""
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if len(command) == 2 and command[0] == "sleep" else 0.0


def table(shutdowns: list[Shutdown]) -> list[str]:
    """Per service: stops, their p50 and longest time, the grace and the stops that broke it."""
    if not shutdowns:
        return []
    lines = ["| service (SIGTERM) | stops | p50 (s) | max (s) | grace (s) | over grace or non-zero |",
             "|---|---|---|---|---|---|"]
    for service in sorted({s.service for s in shutdowns}):
        mine = [s for s in shutdowns if s.service == service]
        seconds = [s.seconds for s in mine]
        lines.append(f"| {service} | {len(mine)} | {statistics.median(seconds):.1f} | {max(seconds):.1f} | "
                     f"{mine[0].grace_s:.0f} | {sum(s.violation() is not None for s in mine)} |")
    return lines
