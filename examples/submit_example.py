"""Submit the example job to a local LotLens and wait for its results.

Usage: .venv/bin/python examples/submit_example.py [job.json]
Reads the gateway URL from LOTLENS_URL (default http://127.0.0.1:18000) and the client key from
LOTLENS_CLIENT_KEY (default: the demo key `make up` created in .state/demo-client-key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def signature(key: str, message: str) -> str:
    """`sha256=<hex>` as the contract defines it."""
    return "sha256=" + hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def main() -> None:
    """Submit, poll with progress, print every lot's descriptions."""
    url = os.environ.get("LOTLENS_URL", "http://127.0.0.1:18000")
    demo_key = HERE.parent / ".state" / "demo-client-key"
    key = os.environ.get("LOTLENS_CLIENT_KEY") or demo_key.read_text().strip()
    job = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else HERE / "job.json").read_text())
    job["signature"] = signature(key, json.dumps(job["lots"], separators=(",", ":"), sort_keys=True))
    with httpx.Client(base_url=url, timeout=60) as client:
        accepted = client.post("/api/v1/generate-descriptions", json=job)
        accepted.raise_for_status()
        job_id = accepted.json()["job_id"]
        print(f"job {job_id} accepted")
        headers = {"X-Signature": signature(key, job_id)}
        while True:
            status = client.get(f"/api/v1/batch-status/{job_id}", headers=headers).json()
            progress = status["progress"]
            print(f"  {status['status']:<12} {progress['completion_percentage']:5.1f}%")
            if status["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(1)
        results = client.get(f"/api/v1/batch-results/{job_id}", headers=headers).json()
    for lot in results["results"]["lots"]:
        print(f"\n{lot['lot_id']} ({lot['status']}, missing: {lot['missing_images']})")
        for description in lot["descriptions"]:
            print(f"  [{description['language']}] {description['damages']}")


if __name__ == "__main__":
    main()
