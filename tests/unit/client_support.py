"""A fake LotLens API for the SDK's unit tests (no tests here; the test modules import from it).

`FakeApi` answers from a script per route and checks every request's signature exactly as the
gateway does (with `lotlens_common.signing`): 401 without one, 403 when it does not verify. It
records what it received, so a test can say what the client sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx2

from lotlens_client import LotLensClient
from lotlens_common import signing

KEY = "shared-key-for-tests"
JOB_ID = "550e8400-e29b-41d4-a716-446655440000"
TS = "2025-08-05T07:30:00Z"
SUBMIT = "/api/v1/generate-descriptions"
Answer = httpx2.Response | Callable[[httpx2.Request], httpx2.Response]


def error(status: int, code: str, message: str = "refused", details: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> httpx2.Response:
    """An answer in the contract's error shape."""
    body: dict[str, Any] = {"error": "Error", "message": message, "code": code}
    if details is not None:
        body["details"] = details
    return httpx2.Response(status, json=body, headers=headers)


def progress(percentage: float = 0.0, processed: int = 0, total: int = 2) -> dict[str, Any]:
    """A `progress` block."""
    return {"total_lots": total, "processed_lots": processed, "failed_lots": 0,
            "completion_percentage": percentage, "estimated_completion": "2025-08-05T08:30:00Z"}


def status_body(status: str = "processing", percentage: float = 50.0, job_id: str = JOB_ID) -> dict[str, Any]:
    """`GET /batch-status` as the gateway answers it."""
    return {"job_id": job_id, "status": status, "created_at": TS, "updated_at": "2025-08-05T07:45:00Z",
            "completed_at": None, "cancelled_at": None,
            "progress": progress(percentage, int(percentage // 50)),
            "languages": ["en", "de"],
            "processing_details": {"openai_vision_batch_id": "batch_v2", "openai_translation_batch_id": None,
                                   "vision_batch_ids": ["batch_v1", "batch_v2"], "translation_batch_ids": [],
                                   "current_stage": "vision_analysis"},
            "openai_vision_batch_id": "batch_v2", "openai_translation_batch_id": None,
            "error_message": None, "webhook_configured": True}


def lot_body(lot_id: str = "lot-1", languages: tuple[str, ...] = ("en", "de")) -> dict[str, Any]:
    """One described lot."""
    return {"lot_id": lot_id, "status": "completed", "processed_at": "2025-08-05T08:10:00Z",
            "processed_images": 2,
            "descriptions": [{"language": code, "damages": f"<p>[{code}] dented door</p>"}
                             for code in languages],
            "missing_images": ["https://img.example.com/missing.jpg"]}


def results_body(job_id: str = JOB_ID, lot_ids: tuple[str, ...] = ("lot-1", "lot-2")) -> dict[str, Any]:
    """`GET /batch-results` of a completed job."""
    return {"job_id": job_id, "status": "completed", "completed_at": "2025-08-05T08:15:00Z",
            "processing_summary": {"total_lots": len(lot_ids), "processed_lots": len(lot_ids),
                                   "failed_lots": 0,
                                   "total_images_processed": 2 * len(lot_ids),
                                   "total_processing_time": "45 minutes"},
            "error_message": None,
            "results": {"version": "1.0.0", "total_lots": len(lot_ids), "processed_lots": len(lot_ids),
                        "failed_lots": 0, "lots": [lot_body(lot_id) for lot_id in lot_ids]}}


def accepted_body(total: int = 2, job_id: str = JOB_ID) -> dict[str, Any]:
    """201 of a batch submission."""
    return {"job_id": job_id, "status": "accepted", "created_at": TS, "total_lots": total,
            "languages": ["en", "de"], "estimated_completion": "2025-08-05T08:30:00Z",
            "processing_mode": "batch", "webhook_configured": False}


def not_completed_body(status: str = "processing") -> dict[str, Any]:
    """202 of the results endpoints."""
    return {"error": "Job not completed", "status": status, "progress": progress(50.0, 1),
            "message": f"Job is currently {status}."}


def lots(count: int = 2, webhook: str | None = None) -> list[dict[str, Any]]:
    """Lots in the contract's shape."""
    made = []
    for i in range(count):
        lot: dict[str, Any] = {"lot_id": f"lot-{i + 1}", "additional_info": f"Car {i}, front collision",
                               "images": [{"url": f"https://img.example.com/{i}-{n}.jpg"} for n in range(2)]}
        if webhook:
            lot["webhook"] = webhook
        made.append(lot)
    return made


@dataclass
class FakeApi:
    """Scripted answers per `METHOD path`; signatures checked as the gateway checks them."""

    key: str = KEY
    routes: dict[str, list[Answer]] = field(default_factory=dict)
    received: list[httpx2.Request] = field(default_factory=list)

    def on(self, route: str, *answers: Answer) -> FakeApi:
        """Answer `route` ("GET /api/v1/...") with these, in order; the last one repeats."""
        self.routes[route] = list(answers)
        return self

    def transport(self) -> httpx2.MockTransport:
        """A transport for `LotLensClient` and `AsyncLotLensClient` alike."""
        return httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Record the request, check its signature, answer from the script."""
        self.received.append(request)
        refused = self._refusal(request)
        if refused is not None:
            return refused
        route = f"{request.method} {request.url.path}"
        answers = self.routes.get(route)
        if not answers:
            return error(404, "NOT_FOUND", f"no route {route}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer

    def body(self, index: int = -1) -> dict[str, Any]:
        """The JSON body of a received request."""
        document: dict[str, Any] = json.loads(self.received[index].content)
        return document

    def _refusal(self, request: httpx2.Request) -> httpx2.Response | None:
        header = request.headers.get("X-Signature")
        path = request.url.path
        if path == SUBMIT:
            document = json.loads(request.content)
            signature, messages = document.get("signature") or header, signing.lots_messages(document["lots"])
        elif path == "/api/v1/batch-jobs":
            signature, messages = header, [request.url.query]
        else:
            job_id = unquote(path.removesuffix("/cancel").removesuffix("/download").removesuffix("/lots")
                             .removesuffix("/retry-failed").rsplit("/", 1)[-1])
            signature, messages = header, [job_id.encode()]
        if not signature:
            return error(401, "MISSING_SIGNATURE")
        if not signing.verify(self.key, messages, signature):
            return error(403, "INVALID_SIGNATURE", "Invalid HMAC signature")
        return None


BASE = "https://lotlens.example.com"


def client_of(api: FakeApi, key: str = KEY, **options: Any) -> tuple[LotLensClient, list[float]]:
    """A client of the fake API whose sleeps are recorded instead of slept."""
    slept: list[float] = []
    return LotLensClient(BASE, key, transport=api.transport(), sleep=slept.append, **options), slept


@dataclass
class FakeClock:
    """Monotonic time that moves only when slept through or `advance`d: deadlines checked exactly."""

    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        """The time now."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the pause and let it pass."""
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Let time pass (a request that took this long)."""
        self.now += seconds


def clocked_client(api: FakeApi, **options: Any) -> tuple[LotLensClient, FakeClock]:
    """A client of the fake API on a fake clock: its sleeps and deadlines take no real time."""
    clock = FakeClock()
    client = LotLensClient(BASE, KEY, transport=api.transport(), sleep=clock.sleep, clock=clock.monotonic,
                           **options)
    return client, clock
