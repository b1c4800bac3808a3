"""The stand-in's CPU for one batch, on loopback and alone: `python -m bench.standin_batch`.

`make bench` sees the stand-in only inside the whole pipeline, where both cores are busy with the
stack; this starts the stand-in by itself (`python -m lotlens_openai_standin`, `--src` to run
another checkout's copy of it), uploads a batch of N lots built like the stage's (`--kind`: vision,
5 images a lot, or translation of a vision answer into the bench's languages), and reads the
stand-in's CPU-seconds (/proc) from the create to `completed`.
The upload and the start are outside the figure. Each case: a fresh stand-in per run, median of
`--runs`. Cases: `memory` is the bench stack's stand-in (no state directory, phases 0 s: one
slice); `durable` is the chaos stack's (a state directory, the run spread over 1 s: ten slices).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

from bench.config import Settings
from bench.cpu import process_cpu_s
from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import translation_request_body
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin.answer_rules import Prompt, vision_text
from tests.servers import free_port

CASES = {"memory": {"STANDIN_IN_PROGRESS_SECONDS": "0"}, "durable": {"STANDIN_IN_PROGRESS_SECONDS": "1"}}


def vision_batch(lots: int) -> bytes:
    """A batch input file of `lots` vision requests, five image URLs each."""
    settings = ModelSettings()
    return b"".join(
        batch_line(f"lot-{i}:vision", vision_request_body(
            f"2019 Toyota Camry, lot {i}", [f"http://127.0.0.1:9/{i}/{k}.png" for k in range(5)], settings))
        for i in range(lots))


def translation_batch(lots: int) -> bytes:
    """A batch input file of `lots` translation requests, each of the stand-in's vision answer."""
    settings, languages = ModelSettings(), Settings().languages
    return b"".join(
        batch_line(f"lot-{i}:translation", translation_request_body(
            vision_text(Prompt(5, f"2019 Toyota Camry, lot {i}", None)), languages, settings))
        for i in range(lots))


KINDS = {"vision": vision_batch, "translation": translation_batch}


@contextmanager
def standin(case: str, src: Path | None, folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A stand-in process for one run, and its base URL."""
    port = free_port()
    env = {**os.environ, "STANDIN_PORT": str(port), "STANDIN_VALIDATING_SECONDS": "0",
           "STANDIN_FINALIZING_SECONDS": "0", "STANDIN_LATENCY_SECONDS": "0", **CASES[case]}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    state = ["--state-dir", str(folder / "state")] if case == "durable" else []
    process = subprocess.Popen([sys.executable, "-m", "lotlens_openai_standin", *state], env=env,
                               stdout=subprocess.DEVNULL, stderr=(folder / "standin.log").open("wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the stand-in did not start"
            try:
                httpx2.get(f"{base}/_standin/stats", timeout=1).raise_for_status()
                break
            except httpx2.HTTPError:
                time.sleep(0.05)
        yield process, base
    finally:
        process.kill()
        process.wait(timeout=10)


def batch_cpu_s(case: str, content: bytes, src: Path | None) -> float:
    """CPU-seconds one stand-in spends from the batch's create to its `completed`."""
    with tempfile.TemporaryDirectory(prefix="standin-bench-") as folder, \
            standin(case, src, Path(folder)) as (process, base), \
            httpx2.Client(base_url=base, timeout=120) as api:
        upload = api.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
        before = process_cpu_s(process.pid)
        batch = api.post("/v1/batches", json={"input_file_id": upload.json()["id"],
                                              "endpoint": "/v1/responses", "completion_window": "24h"}).json()
        while (status := api.get(f"/v1/batches/{batch['id']}").json()["status"]) != "completed":
            assert status in ("validating", "in_progress", "finalizing"), status
            time.sleep(0.2)  # a few requests a second: a small share of the figure
        return process_cpu_s(process.pid) - before


def main() -> None:
    """Print the median CPU-seconds of each case and size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, nargs="+", default=[5_000, 50_000])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--src", type=Path, help="run the stand-in from this source folder")
    parser.add_argument("--kind", choices=sorted(KINDS), default="vision", help="the stage whose batch it is")
    args = parser.parse_args()
    for lots in args.lots:
        content = KINDS[args.kind](lots)
        for case in args.cases:
            runs = [batch_cpu_s(case, content, args.src) for _ in range(args.runs)]
            shown = " ".join(f"{run:.2f}" for run in runs)
            median = statistics.median(runs)
            print(f"{lots:>6} lots {args.kind} {case:<8} median {median:.2f} CPU-s ({shown})", flush=True)


if __name__ == "__main__":
    main()
