"""Network faults through toxiproxy (built by scripts/tools.sh): one proxy in front of the run's
Kafka broker, one in front of PostgreSQL and one in front of the stand-in, all on loopback. The
services talk through them; the chaos runner's own checks reach PostgreSQL and the stand-in
directly and Kafka through its proxy (the broker advertises the proxy's address). A fault waits
(bounded) for its link to show traffic, then is a toxic added for its hold, then removed; it fired
only when bytes crossed the proxy meanwhile (chaos/traffic.py): a toxic on a link nothing used
tested nothing."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from chaos.traffic import Flow, connections, moved, wait_for_traffic
from tests.servers import free_port

# Each network fault kind: toxiproxy's toxic type and its attributes (times in ms, rate in KB/s).
TOXICS: dict[str, tuple[str, dict[str, Any]]] = {
    "net-latency": ("latency", {"latency": 250, "jitter": 100}),
    "net-reset": ("reset_peer", {"timeout": 0}),
    "net-timeout": ("timeout", {"timeout": 2000}),
    "net-bandwidth": ("bandwidth", {"rate": 4}),
}
# What a network fault can sit in front of.
UPSTREAMS = ("kafka", "postgres", "standin")
# Bytes a proxy took from its clients, added per connection when it ends (chaos/traffic.py), a
# reset or timed-out one included. Served with `-proxy-metrics`.
RECEIVED = "toxiproxy_proxy_received_bytes_total{"


class NoTraffic(Exception):
    """A network fault met no traffic while it was on: it disturbed nothing (not fired)."""


def received_bytes(metrics: str, proxy: str) -> float:
    """What the ended connections of a proxy's clients sent it, read from toxiproxy's Prometheus
    metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(RECEIVED) and f'proxy="{proxy}"' in line and 'direction="upstream"' in line)


def toxiproxy_binary(root: Path) -> Path:
    """The toxiproxy server, built once into the tool cache by scripts/tools.sh."""
    tools = subprocess.run(
        [str(root / "scripts" / "tools.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(tools) / "toxiproxy-server"


@dataclass
class Toxiproxy:
    """A toxiproxy server on loopback and the proxies made on it (name -> listening port)."""

    binary: Path
    log: Path
    port: int = field(default_factory=free_port)
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # How long a fault waits for its link to show traffic before it starts anyway: the stand-in's
    # is busy only while batches or sync calls run; Kafka's and PostgreSQL's are polled every
    # second or less (consumers' fetches, the gateway's outbox, the dispatcher's queue).
    traffic_wait_s: float = 30.0

    @property
    def api(self) -> str:
        """The control API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Run the server and wait for its API."""
        if shutil.which("ss") is None:  # without it, every network fault would read as not fired
            raise RuntimeError("network faults need `ss` (iproute2) to see a proxy's traffic")
        self.process = subprocess.Popen(
            [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port), "-proxy-metrics"],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx2.get(f"{self.api}/version", timeout=2).raise_for_status()
                return
            except httpx2.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"toxiproxy did not answer on {self.api}")

    def proxy(self, name: str, upstream_port: int) -> int:
        """A proxy to a loopback port; returns the port it listens on."""
        port = free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{upstream_port}"}
        httpx2.post(f"{self.api}/proxies", json=body, timeout=10).raise_for_status()
        self.ports[name] = port
        return port

    def add(self, proxy: str, kind: str) -> None:
        """Start a fault of a kind on both directions of a proxy's connections."""
        toxic, attributes = TOXICS[kind]
        for stream in ("downstream", "upstream"):
            body = {"name": f"{kind}-{stream}", "type": toxic, "stream": stream, "attributes": attributes}
            httpx2.post(f"{self.api}/proxies/{proxy}/toxics", json=body, timeout=10).raise_for_status()

    def flow(self, proxy: str) -> Flow:
        """The proxy's traffic so far: its open connections' byte counts (the kernel's, read with
        `ss` on its listening port), then the bytes toxiproxy counted for the ended ones."""
        listed = subprocess.run(
            ["ss", "-tinHO", "state", "established", f"( sport = :{self.ports[proxy]} )"],
            check=True, capture_output=True, text=True,
        ).stdout
        answer = httpx2.get(f"{self.api}/metrics", timeout=10)
        answer.raise_for_status()
        return Flow(connections(listed), received_bytes(answer.text, proxy))

    def await_traffic(self, proxy: str) -> float | None:
        """Seconds until bytes crossed the proxy, waiting at most `traffic_wait_s`; None: quiet."""
        return wait_for_traffic(lambda: self.flow(proxy), self.traffic_wait_s)

    def hold(self, proxy: str, kind: str, seconds: float) -> bool:
        """A fault of a kind on a proxy for `seconds`; whether bytes crossed it meanwhile (False:
        the fault did not fire)."""
        self.add(proxy, kind)
        try:
            before = self.flow(proxy)
            time.sleep(seconds)
            return moved(before, self.flow(proxy))
        finally:
            self.clear(proxy, kind)

    def clear(self, proxy: str, kind: str) -> None:
        """End a fault: remove its toxics."""
        for stream in ("downstream", "upstream"):
            httpx2.delete(f"{self.api}/proxies/{proxy}/toxics/{kind}-{stream}", timeout=10).raise_for_status()

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
