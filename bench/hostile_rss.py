"""Peak RSS and CPU of a gateway refusing hostile bodies at the body cap, and accepting the largest
real job: `python -m bench.hostile_rss [--src DIR]`.

Each body goes to a fresh gateway process (so its peak is that request's alone); the figure is
the process's VmHWM (peak resident set) after the answer, next to its VmHWM when idle. `--src`
runs another checkout's gateway and common library (e.g. main's, extracted with `git archive`)
to measure before a change. Needs the infrastructure of `scripts/infra.sh env` in the environment
(the accepted job writes its 50,001 outbox rows to `DATABASE_URL`'s database: point it at a scratch one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2

from bench.cpu import process_cpu_s
from bench.payload import auction_lots, submission
from lotlens_gateway.config import GatewaySettings
from tests.servers import free_port

MB = 1024 * 1024
CAP: int = GatewaySettings.model_fields["max_body_bytes"].default
BODY_BYTES = CAP - 1024
KEY = "bench-key-" + "0" * 32


def empty_lots() -> bytes:
    """`{"signature":"sha256=00","lots":[{},{},…]}` just under the cap."""
    head, tail = b'{"signature":"sha256=00","lots":[', b"{}]}"
    return head + b"{}," * ((BODY_BYTES - len(head) - len(tail)) // 3) + tail


def long_integers() -> bytes:
    """A body at the cap whose lots are 22-digit integers."""
    head, tail, item = b'{"signature":"sha256=00","lots":[', b"1]}", b"1234567890123456789012,"
    return head + item * ((BODY_BYTES - len(head) - len(tail)) // len(item)) + tail


def integer_lots() -> bytes:
    """A body at the cap of 4,500-odd lots (under every count limit), each 1,400 22-digit integers."""
    head, tail = b'{"signature":"sha256=00","lots":[', b"[1]]}"
    lot = b"[" + b"1234567890123456789012," * 1_400 + b"1],"
    return head + lot * ((BODY_BYTES - len(head) - len(tail)) // len(lot)) + tail


def string_lots() -> bytes:
    """A body at the cap of lots of 50,000 two-letter strings each (dense: each lot is measured first)."""
    head, tail = b'{"signature":"sha256=00","lots":[', b"[]]}"
    lot = b'["' + b'ab","' * 50_000 + b'"],'
    return head + lot * ((BODY_BYTES - len(head) - len(tail)) // len(lot)) + tail


def auction_job() -> bytes:
    """50,000 signed lots of 23 photos each (the largest real lot has 20), as near the cap as that
    comes: accepted (201), the most a taken job holds (their webhook on loopback: no DNS)."""
    lots = auction_lots(50_000, photos=23, webhook="http://127.0.0.1:9/dealer-portal/integrations/lotlens/hook")
    return submission(KEY, lots, ["en", "de", "fr"])


def auction_job_utf8() -> bytes:
    """The same job with an em dash in every note, sent as raw UTF-8 (JSON.stringify, orjson): the
    decoded text is 2 bytes a character, which the lots were once parsed from (201)."""
    lots = auction_lots(50_000, photos=23, webhook="http://127.0.0.1:9/dealer-portal/integrations/lotlens/hook")
    for lot in lots:
        lot["additional_info"] = lot["additional_info"][:-2] + " \u2014"
    return submission(KEY, lots, ["en", "de", "fr"])


BODIES: dict[str, Callable[[], bytes]] = {"empty lots": empty_lots,
                                          "long integers": long_integers,
                                          "lots of long integers": integer_lots,
                                          "lots of short strings": string_lots,
                                          "50,000 lots of 23 photos (201)": auction_job,
                                          "in raw UTF-8, a dash in each note (201)": auction_job_utf8}


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def measure(name: str, body: bytes, src: Path | None) -> dict[str, object]:
    """Start a gateway, send `body`, return the answer, the time and CPU it took and the peaks."""
    port = free_port()
    env = {**os.environ, "LOTLENS_CLIENTS": json.dumps({"bench": KEY}), "LOTLENS_ALLOW_LOOPBACK_URLS": "true",
           "LOTLENS_GATEWAY_PORT": str(port), "LOTLENS_TOPIC_SUBMISSIONS": "hostile-rss.submissions",
           "LOTLENS_RATE_LIMIT_BATCH": "1000"}
    if src is not None:
        env["PYTHONPATH"] = f"{src / 'services/gateway/src'}:{src / 'libs/common/src'}"
    gateway = subprocess.Popen([sys.executable, "-m", "lotlens_gateway"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                httpx2.get(f"{url}/openapi.json", timeout=5)
                break
            except httpx2.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        idle, cpu = _peak_kb(gateway.pid), process_cpu_s(gateway.pid)
        started = time.monotonic()
        answer = httpx2.post(f"{url}/api/v1/generate-descriptions", content=body, timeout=300,
                            headers={"content-type": "application/json"})
        took = time.monotonic() - started
        peak = _peak_kb(gateway.pid)
        return {"body": name, "mb": round(len(body) / MB), "status": answer.status_code,
                "code": answer.json().get("code"),
                "seconds": round(took, 2), "cpu_s": round(process_cpu_s(gateway.pid) - cpu, 2),
                "idle_mb": round(idle / 1024), "peak_mb": round(peak / 1024)}
    finally:
        gateway.terminate()
        gateway.wait(30)


def main() -> None:
    """Measure every hostile body and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, help="a checkout whose gateway to run instead of this one")
    parser.add_argument("--only", help="measure only the bodies whose name contains this")
    args = parser.parse_args()
    for name, build in BODIES.items():
        if args.only and args.only not in name:
            continue
        print(json.dumps(measure(name, build(), args.src)), flush=True)


if __name__ == "__main__":
    main()
