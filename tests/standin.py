"""The project's OpenAI stand-in, run in a thread on a free port for one test or module."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import uvicorn

from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin import StandinConfig, create_app
from lotlens_openai_standin.answer_rules import Prompt, translated, vision_text
from tests.openai_spec import OpenAISpec, SpecRecorder
from tests.polling import wait_for
from tests.servers import free_port

PHASE_S = 0.1


def description(image_count: int, notes: str) -> str:
    """The stand-in's description of a lot with that many images and these notes (its first paragraph
    names both, its paragraphs and list after are a real description's: `answer_rules.vision_text`)."""
    return vision_text(Prompt(image_count, notes, None))


def translation(language: str, english: str, other_variant: bool = False) -> str:
    """The stand-in's translation of `english` into `language` (`answer_rules.translated`;
    `other_variant`: a Chinese language in the other system's forms, as its fault writes it)."""
    return translated(language, english, other_variant)


@cache
def _spec() -> OpenAISpec:
    return OpenAISpec()


@dataclass(frozen=True)
class Standin:
    """A running stand-in: its `/v1` base URL and its `/_standin/` controls."""

    base_url: str
    control: httpx2.Client
    api_key: str | None
    # Holds every exchange to the OpenAI description (see serve_standin).
    recorder: SpecRecorder

    def faults(self, **faults: Any) -> None:
        """Inject faults (see the stand-in's control API)."""
        self.control.post("/_standin/faults", json=faults).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Counters: files, batches (with their metadata), direct calls."""
        return dict(self.control.get("/_standin/stats").json())


@contextmanager
def serve_standin(data_dir: Path, **overrides: Any) -> Iterator[Standin]:
    """Start the stand-in with short batch phases (overridable) and stop it afterwards.

    Every exchange is held to the OpenAI description (tests/openai_spec.py): a request the stand-in
    accepted or an answer it gave that the description does not allow fails the test on the way out.
    """
    port = free_port()
    phases = {"validating_seconds": PHASE_S, "in_progress_seconds": PHASE_S,
              "finalizing_seconds": PHASE_S}
    config = StandinConfig(port=port, data_dir=data_dir, **{**phases, **overrides})
    recorder = SpecRecorder(create_app(config), _spec())
    server = uvicorn.Server(uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the stand-in to start", timeout_s=10, every_s=0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=base, timeout=10) as control:
            yield Standin(f"{base}/v1", control, config.api_key, recorder)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not recorder.violations, "the stand-in's traffic breaks the OpenAI description:\n" + "\n".join(
        recorder.violations[:20])


@contextmanager
def standin_process(log_dir: Path, port: int, state_dir: Path | None = None,
                    **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The stand-in as its own process (so a test can kill -9 it), its log in `log_dir`.

    With `state_dir` it keeps its state there; without, in memory and a temporary folder.
    """
    log = (log_dir / f"standin-{port}.log").open("ab")
    state = ["--state-dir", str(state_dir)] if state_dir else []
    process = subprocess.Popen(
        [sys.executable, "-m", "lotlens_openai_standin", *state],
        env={**os.environ, "STANDIN_PORT": str(port), **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        def serving() -> bool:
            assert process.poll() is None, "the stand-in exited on start"
            try:
                httpx2.get(f"http://127.0.0.1:{port}/_standin/stats", timeout=1).raise_for_status()
            except httpx2.HTTPError:
                return False
            return True

        wait_for(serving, "the stand-in to start")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def completed_vision_batch(api: httpx2.Client, lots: int, timeout_s: float = 60.0) -> str:
    """The id of a batch of `lots` vision lines run to `completed` through the stand-in's API."""
    content = b"".join(batch_line(f"lot-{i}:vision", vision_request_body(
        f"note {i}", ["https://img.example/1.jpg"], ModelSettings())) for i in range(lots))
    upload = api.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    created = api.post("/batches", json={"input_file_id": upload.json()["id"], "completion_window": "24h",
                                         "endpoint": "/v1/responses"})
    batch_id = str(created.json()["id"])
    batch_reaching(api, batch_id, ("completed",), timeout_s=timeout_s)
    return batch_id


def batch_reaching(api: httpx2.Client, batch_id: str, statuses: tuple[str, ...],
                   timeout_s: float = 30.0) -> dict[str, Any]:
    """The batch as the stand-in's API shows it once its status is one of `statuses`."""
    shown: list[dict[str, Any]] = []

    def reached() -> bool:
        shown[:] = [api.get(f"/batches/{batch_id}").json()]
        return shown[0]["status"] in statuses

    wait_for(reached, lambda: f"batch {batch_id} to reach {statuses} (it is {shown[0]['status']})",
             timeout_s=timeout_s)
    return shown[0]
