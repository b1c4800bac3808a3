"""The gateway's RSS under results downloads that are never read: the reviewer's two scenarios.

    DATABASE_URL=… KAFKA_BOOTSTRAP_SERVERS=… .venv/bin/python -m scripts.download_memory [--src DIR]
        [--per-client N]

A gateway process is started per scenario (`--src` puts another checkout's `services/gateway/src`
and `libs/common/src` first on its path, to measure older code) on a migrated database:
1. a 3,000-lot job, 10 languages of 1.5 KB texts: 20 connections that read only the status line;
2. 60 failed lots listing 400 unreachable 2.4 KB image URLs each: 6 such connections.
RSS is read from /proc before, once it settles, 20 s later, and after the sockets are closed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
from sqlalchemy import Engine

from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings
from tests.integration.download_support import (
    insert_long_texts_job,
    insert_unreachable_images_job,
    start_download,
)

CLIENT, KEY = "memory-check", "memory-check-key"
MB = 1024 * 1024


def rss(pid: int) -> float:
    """The process's resident set, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int, timeout_s: float = 60.0) -> tuple[float, float]:
    """(settled, peak) RSS once it stops growing."""
    samples: list[float] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(rss(pid))
        if len(samples) >= 6 and max(samples[-5:]) - min(samples[-5:]) < 2:
            break
    return samples[-1], max(samples)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(src: str | None, per_client: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "LOTLENS_CLIENTS": json.dumps({CLIENT: KEY}), "LOTLENS_GATEWAY_PORT": str(port),
           "LOTLENS_DOWNLOAD_SLOTS_PER_CLIENT": str(per_client), "LOG_LEVEL": "WARNING"}
    if src:
        env["PYTHONPATH"] = os.pathsep.join([f"{src}/services/gateway/src", f"{src}/libs/common/src"])
    process = subprocess.Popen([sys.executable, "-m", "lotlens_gateway"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return process, url
        except httpx2.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the gateway did not start")


def scenario(name: str, engine: Engine, make_job: Callable[[Engine], str], readers: int, src: str | None,
             per_client: int) -> None:
    job_id = make_job(engine)
    process, url = start_gateway(src, per_client)
    try:
        idle, _ = settled_rss(process.pid)
        socks, refused = [], 0
        for _ in range(readers):
            try:
                socks.append(start_download(url, KEY, job_id))
            except AssertionError:
                refused += 1
        held, peak = settled_rss(process.pid)
        time.sleep(20)
        later = rss(process.pid)
        for sock in socks:
            sock.close()
        time.sleep(5)
        after_close = rss(process.pid)
        print(f"{name}: {readers} unread downloads ({refused} refused): idle {idle:.0f} MB, "
              f"settled {held:.0f} MB (+{held - idle:.0f}), peak {peak:.0f} MB, 20 s later {later:.0f} MB "
              f"(+{later - idle:.0f}), sockets closed {after_close:.0f} MB (+{after_close - idle:.0f})",
              flush=True)
    finally:
        process.terminate()
        process.wait(60)


def main() -> None:
    """Run both scenarios and print the RSS figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", help="a checkout whose gateway and common sources to run")
    parser.add_argument("--per-client", type=int, default=4, help="LOTLENS_DOWNLOAD_SLOTS_PER_CLIENT")
    args = parser.parse_args()
    engine = make_engine(DatabaseSettings(), "download-memory")
    try:
        scenario("3,000 lots x 10 languages x 1.5 KB", engine,
                 lambda e: insert_long_texts_job(e, CLIENT, 3000), 20, args.src, args.per_client)
        scenario("60 failed lots x 400 URLs x 2.4 KB", engine,
                 lambda e: insert_unreachable_images_job(e, CLIENT, 60), 6, args.src, args.per_client)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
